from arc_ttft.cli import entry

entry()
