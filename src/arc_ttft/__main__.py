from arc_ttft.cli import main

raise SystemExit(main())
