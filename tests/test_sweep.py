"""`arc-ttft sweep`: the spec check, the job plan, and sweeps on real Ray clusters.

The Ray tests (marker ``cluster``: `.ci/run` runs them in a step of their own, the README's
test command leaves them out) start a two-node cluster on this machine with `ray start`,
and an embedded one through the CLI, and kill nodes and the driver.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from arc_ttft import cli
from arc_ttft.config import ConfigError
from arc_ttft.research import sweep_spec as SP
from arc_ttft.research import sweep_summary as SS
from arc_ttft.training import synthetic

ray = pytest.importorskip("ray")  # requirements.txt installs it; the skip names the fix


def _spec(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "spec.toml"
    p.write_text(text)
    return p


def test_a_bad_spec_is_refused_before_anything_starts_with_every_problem(tmp_path, capsys):
    spec = _spec(
        tmp_path,
        'challenges = "arc1-simple"\ncolour = "red"\nseeds = []\n[run]\nmodel = "no-such-model"\n',
    )
    out = tmp_path / "out"
    rc = cli.main(["sweep", "--spec", str(spec), "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "colour: unknown field" in err
    assert "arms: none" in err
    assert "seeds: []" in err
    assert not out.exists()  # refused before anything started
    # an arm's own problems: an unknown run field, an unknown model, a field the sweep sets,
    # a bad value that the run's own validation catches, an unknown fine-tune field
    spec = _spec(
        tmp_path,
        'challenges = "arc1-simple"\n'
        '[arms.a]\nrun = { ttt_stepz = 3, model = "nope", output = "x" }\n'
        '[arms.b]\nrun = { views = 0 }\nfinetune = { data = ["arc1-train"], max_stepz = 1 }\n'
        "[arms.c]\nrnu = {}\n[arms.d]\nrun = 3\n",
    )
    with pytest.raises(ConfigError) as e:
        SP.read_spec(spec)
    text = "\n".join(e.value.problems)
    for want in (
        "arms.a.run.ttt_stepz: unknown field",
        "arms.a.run.model: unknown model 'nope'",
        "arms.a.run.output: set by the sweep",
        "arms.b.run: views",
        "arms.b.finetune.max_stepz: unknown field",
        "arms.c.rnu: unknown field",
        "arms.d.run: expected a table",
    ):
        assert want in text, (want, text)


def test_the_plan_shards_tasks_and_shares_one_finetune_per_seed(tmp_path):
    spec = SP.read_spec(
        {
            "challenges": "arc1-simple",
            "held_out": ["arc1-eval-small"],
            "seeds": [0, 3],
            "shards": 2,
            "finetune": {"max_steps": 2},
            "arms": {
                "mix-ttt0": {"finetune": {"data": ["arc1-train"]}, "run": {"ttt_steps": 0}},
                "mix-ttt8": {"finetune": {"data": ["arc1-train"]}, "run": {"ttt_steps": 8}},
                "base": {"run": {"ttt_steps": 0}},
            },
        }
    )
    ids = [f"t{i}" for i in range(5)]
    jobs = SP.plan_jobs(spec, tmp_path, ids)
    fts = [j for j in jobs if j.kind == "finetune"]
    runs = [j for j in jobs if j.kind == "run"]
    assert len(fts) == 2 and len(runs) == 3 * 2 * 2  # one fine-tune per seed, shared
    assert jobs[: len(fts)] == fts  # fine-tunes first: runs wait on them
    assert fts[0].flat["data"] == ["arc1-train", "-holdout:arc1-eval-small"]
    assert {j.flat["seed"] for j in fts} == {0, 3} and fts[0].scored == ids
    mine = [j for j in runs if j.arm == "mix-ttt8" and j.seed == 3]
    assert [j.flat["tasks"] for j in mine] == [["t0", "t2", "t4"], ["t1", "t3"]]
    assert all(j.needs == f"finetune/{SP.finetune_key(spec, spec.arms[0])}/s3" for j in mine)
    assert all(j.needs is None for j in runs if j.arm == "base")


def test_resume_runs_only_the_arms_added_to_a_finished_sweep(tmp_path, monkeypatch):
    from arc_ttft.research import sweep as S

    def spec_of(arms: dict):
        return SP.read_spec({"challenges": "arc1-simple", "max_tasks": 2, "arms": arms})

    first = spec_of({"base": {"run": {"ttt_steps": 0}}, "ttt": {"run": {"ttt_steps": 2}}})
    out = tmp_path / "sweep"
    ids = [t.id for t in SP.scored_tasks(first)]
    for job in SP.plan_jobs(first, out, ids):  # as if the first sweep had finished
        Path(job.folder).mkdir(parents=True)
        (Path(job.folder) / "result.json").write_text(json.dumps({"status": "done"}))
    (out / "spec.json").write_text(json.dumps(S.resolved_spec(first)))
    ran: list[str] = []
    monkeypatch.setattr(S, "_run_on_ray", lambda todo, *a: ran.extend(j.id for j in todo) or 0)
    monkeypatch.setattr(S, "summarise", lambda *a, **k: None)

    added = {"steps8": {"run": {"ttt_steps": 8}}}
    S.sweep(spec_of({**{a.name: {"run": a.run} for a in first.arms}, **added}), out, resume=True)
    assert ran == ["steps8/s0/shard0of1"]  # the finished arms are not rerun
    stored = json.loads((out / "spec.json").read_text())
    assert [a["name"] for a in stored["arms"]] == ["base", "ttt", "steps8"]
    # an arm changed, or the shared settings changed, would mix two sweeps: refused
    kept = {"base": {"run": {"ttt_steps": 0}}, **added}
    for other in (
        spec_of({**kept, "ttt": {"run": {"ttt_steps": 3}}}),
        SP.read_spec({"challenges": "arc1-simple", "max_tasks": 1,
                      "arms": {**kept, "ttt": {"run": {"ttt_steps": 2}}}}),
    ):  # fmt: skip
        with pytest.raises(ConfigError, match="nor that one with arms added"):
            S.sweep(other, out, resume=True)


def test_interval_and_groups():
    mean, low, high = SS.interval([0.5, 0.52])
    assert mean == pytest.approx(0.51)
    half = 12.706 * 0.0141421 / 1.4142136  # t(0.975, 1 df) x sd / sqrt(n)
    assert (low, high) == (
        pytest.approx(0.51 - half, rel=1e-4),
        pytest.approx(0.51 + half, rel=1e-4),
    )
    assert SS.interval([0.4])[1:] == (None, None)
    assert SS.interval([0.0, 1.0])[1:] == (0.0, 1.0)  # a score's interval stays in [0, 1]
    from arc_ttft.tasks import load_tasks

    task = load_tasks("arc1-simple", None).tasks[0]
    assert SS.group_of(task).startswith("sides")
    ch, _ = synthetic.generate(1, 5, ["flip_h"], 2, 3)
    assert SS.group_of(type(task)(next(iter(ch)), [], [])) == "flip_h"


# ---------------------------------------------------------------------------------------
# Ray: a two-node cluster on loopback, and an embedded one killed mid-sweep
# ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_env():
    """The environment of every Ray process of a test, and its temp folder removed after."""
    # Ray >= 2.5x starts clusters with token authentication: every node and driver shares
    # one token; a test's own token keeps ~/.ray out of it. The temp folder is short: Ray's
    # socket paths must stay under 108 characters.
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    yield {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": tmp,
    }
    shutil.rmtree(tmp, ignore_errors=True)


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    # --block keeps `ray start` in the foreground; its own session lets a test kill that
    # node (and only it) with one killpg.
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", *args, "--block"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def _wait_for(cond, seconds: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > seconds:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.5)


def _worker_node_id(address: str, env: dict) -> str:
    # In a process of its own: a driver in the test process would stay attached to the cluster.
    code = (
        f"import json, ray; ray.init(address={address!r}, logging_level='ERROR'); print(json.dumps("
        "[n['NodeID'] for n in ray.nodes() if n['Alive'] and 'test_worker' in n['Resources']]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    ids = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else []
    assert len(ids) == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    return ids[0]


@pytest.fixture
def two_node_cluster(tmp_path, ray_env):
    """`ray start --head` and a second `ray start --address`, one CPU each, on 127.0.0.1."""
    env = ray_env
    port = _free_port()
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    head = _start(
        ["--head", f"--port={port}", "--include-dashboard=false", *common], env, tmp_path / "h.log"
    )
    worker = None
    try:
        addr = f"127.0.0.1:{port}"
        _wait_for(lambda: "--block" in (tmp_path / "h.log").read_text(), 90, "the head node")
        # A custom resource marks the worker, so that a test can tell its node id apart.
        worker = _start(
            [f"--address={addr}", '--resources={"test_worker": 1}', *common],
            env,
            tmp_path / "w.log",
        )
        _wait_for(lambda: "--block" in (tmp_path / "w.log").read_text(), 90, "the worker node")
        yield {
            "address": addr,
            "env": env,
            "head": head,
            "worker": worker,
            "worker_id": _worker_node_id(addr, env),
        }
    finally:
        for proc in (worker, head):
            if proc is not None:
                _kill(proc)


def _generated_tasks(tmp_path: Path) -> Path:
    ch, sol = synthetic.generate(4, 321, ["flip_h", "colour_map", "scale2", "rot180"], 2, 3)
    return synthetic.write_kaggle(ch, sol, tmp_path / "data", "gen4")[0]


FOUR_ARMS = {
    "base": {"ttt_steps": 0},
    "ttt": {"ttt_steps": 8},
    "ttt-lr3e-3": {"ttt_steps": 8, "learning_rate": 3e-3},
    "base-views2": {"ttt_steps": 0, "views": 2},
}


def _solo_score(challenges: Path, overrides: dict, out: Path) -> str:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in overrides.items()]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "arc_ttft",
            "run",
            "--challenges",
            str(challenges),
            "--model",
            "arc-nano",
            "--probe-tasks",
            "0",
            "--budget-minutes",
            "30",
            *flags,
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]  # score: X.XXXX (S/T tasks)


@pytest.mark.cluster
def test_a_four_arm_sweep_on_two_nodes_survives_losing_one_and_matches_solo_runs(
    tmp_path, two_node_cluster
):
    challenges = _generated_tasks(tmp_path)
    arms = "".join(
        f"[arms.{name}]\nrun = {{ {', '.join(f'{k} = {v}' for k, v in o.items())} }}\n"
        for name, o in FOUR_ARMS.items()
    )
    spec = _spec(
        tmp_path,
        f'challenges = "{challenges}"\nshards = 2\nmax_retries = 3\n'
        '[run]\nmodel = "arc-nano"\nprobe_tasks = 0\nbudget_minutes = 30\n' + arms,
    )
    out = tmp_path / "sweep"
    env = two_node_cluster["env"]
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "arc_ttft",
            "sweep",
            "--spec",
            str(spec),
            "--output",
            str(out),
            "--address",
            two_node_cluster["address"],
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        # The worker node goes once it has finished a job, while it runs its next one: that
        # job (and anything queued for it) must be retried on the head. Waiting for the
        # running job, not for a count of finished ones: a worker that has finished all its
        # jobs by then leaves nothing to retry.
        worker_id = two_node_cluster["worker_id"]

        def worker_busy_after_a_job() -> bool:
            done = running = False
            for started in out.glob("jobs/*/s0/*/started"):
                if started.read_text().split()[-1:] != [worker_id]:
                    continue
                result = started.with_name("result.json")
                if result.exists():
                    done = True
                else:
                    running = True
            return done and running

        _wait_for(worker_busy_after_a_job, 300, "the worker running a job after finishing one")
        _kill(two_node_cluster["worker"])
        text, _ = driver.communicate(timeout=600)
    finally:
        _kill(driver)
    assert driver.returncode == 0, text[-3000:]
    assert "failed 0, left 0" in text
    records = [json.loads(x) for x in (out / "sweep.jsonl").read_text().splitlines()]
    jobs = [r for r in records if r["event"] == "job"]
    assert len(jobs) == 8 and all(r["status"] == "done" for r in jobs)
    assert len({r["node"] for r in jobs}) == 2  # both nodes ran jobs
    attempts = [p.read_text().split() for p in out.glob("jobs/*/s0/*/started")]
    retried = [a for a in attempts if len(a) > 1]
    assert retried and all(len(set(a)) == 2 for a in retried)  # killed there, redone here
    arms = {r["arm"]: r for r in records if r["event"] == "arm"}
    for name, overrides in FOUR_ARMS.items():
        solo = _solo_score(challenges, overrides, tmp_path / f"solo-{name}")
        s = arms[name]
        assert solo == f"score: {s['mean']:.4f} ({s['solved'][0]}/{s['total']} tasks)", name
    assert (out / "summary.md").read_text().count("\n| ") >= 5
    assert (out / "sweep.png").stat().st_size > 1000


@pytest.mark.cluster
def test_resume_after_the_head_is_killed_reruns_only_unfinished_jobs(tmp_path, ray_env):
    env = ray_env
    spec = _spec(
        tmp_path,
        'challenges = "arc1-simple"\nmax_tasks = 3\nshards = 3\nmax_retries = 0\n'
        # held out of every fine-tune: the broken arm below has nothing left to train on
        'held_out = ["arc1-simple"]\n'
        '[run]\nmodel = "tiny"\nprobe_tasks = 0\nviews = 2\nbudget_minutes = 10\n'
        "[arms.base]\nrun = { ttt_steps = 0 }\n[arms.ttt]\nrun = { ttt_steps = 2 }\n"
        '[arms.broken]\nfinetune = { data = ["arc1-simple"], max_steps = 1 }\n',
    )
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "arc_ttft", "sweep", "--spec", str(spec), "--output", str(out)]
    head = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        _wait_for(lambda: any(out.glob("jobs/*/s0/*/result.json")), 300, "a first job")
        os.killpg(head.pid, signal.SIGKILL)  # the driver and its embedded Ray, at once
        head.wait(30)
    finally:
        _kill(head)
    finished = {
        json.loads(p.read_text())["id"]
        for p in out.glob("jobs/*/s0/*/result.json")
        if json.loads(p.read_text())["status"] == "done"
    }
    assert finished and len(finished) < 6
    # a second run without --resume refuses to overwrite them
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--resume" in proc.stderr
    # nor does --resume with another spec mix two sweeps
    other = _spec(tmp_path / "other", spec.read_text().replace("ttt_steps = 2", "ttt_steps = 3"))
    changed = [*cmd[:-4], "--spec", str(other), "--output", str(out), "--resume"]
    proc = subprocess.run(changed, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "not the one the sweep" in proc.stderr
    proc = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(x) for x in (out / "sweep.jsonl").read_text().splitlines()]
    after = [r["id"] for r in records if r["event"] == "job"]
    # the resumed run ran every unfinished job and none of the finished ones
    assert not finished & set(after)
    assert set(after) | finished >= {
        f"{a}/s0/shard{k}of3" for a in ("base", "ttt") for k in range(3)
    }
    broken = [r for r in records if r["event"] == "job" and r["status"] == "failed"]
    assert {r["kind"] for r in broken} == {"finetune", "run"}  # its runs fail with it
    assert all("leaves no task to train on" in r["error"] for r in broken), broken[0]["error"]
    arms = {r["arm"]: r for r in records if r["event"] == "arm"}
    assert arms["broken"]["failed_jobs"] == 3 and arms["base"]["failed_jobs"] == 0
    assert "written:" in proc.stdout.splitlines()[-1]


@pytest.mark.cluster
def test_the_harness_runs_its_arms_through_sweep(tmp_path):
    """scripts/bench_learning.py: two arms as one sweep, two shards each; the record, the
    page and the last line as before."""
    record, page = tmp_path / "learning.jsonl", tmp_path / "learning.md"
    flags = "--model tiny --n-tasks 3 --max-size 3 --arms base,ttt --set views=2 --shards 2"
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/bench_learning.py",
            *flags.split(),
            "--work",
            str(tmp_path / "work"),
            "--record",
            str(record),
            "--markdown",
            str(page),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == f"wrote {page}"
    assert [x.split(":")[0] for x in lines if x.startswith(("base:", "ttt:"))] == ["base", "ttt"]
    rows = [json.loads(x) for x in record.read_text().splitlines()]
    assert [r["total"] for r in rows] == [3, 3] and rows[1]["ttt_tasks"] == 3
    assert rows[0]["ttt_tasks"] == 0
    jobs = list((tmp_path / "work" / "sweeps").glob("*/jobs/*/s0/shard*/result.json"))
    assert len(jobs) == 4


def test_without_ray_the_sweep_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    spec = _spec(tmp_path, 'challenges = "arc1-simple"\nmax_tasks = 1\n[arms.a]\nrun = {}\n')
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    rc = cli.main(["sweep", "--spec", str(spec), "--output", str(tmp_path / "out")])
    assert rc == 2 and "pip install -e '.[sweep]'" in capsys.readouterr().err
