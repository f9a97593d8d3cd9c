"""At least 120 bad inputs, each answered before any work by one line naming the key, checked in-process.

A case is ``(command, argv, key)``: the arguments of ``cpl train`` or ``cpl sweep`` and the key (or
file) the one-line message must name. YAML cases name a file of :data:`YAML_FILES`, written to a
temporary conf folder.
"""

from __future__ import annotations

M = "conf=matcomp_rank10to5"
P = "conf=multipath_depth4_gating"
S = "conf=matcomp_depth_sweep_quick"


def _values(conf: str, key: str, values) -> list[tuple[str, list[str], str]]:
    return [("train", [conf, f"{key}={v}"], key) for v in values]


MATCOMP = [
    *_values(M, "seed", ["-1", "4294967296", "abc", "1.5"]),
    *_values(M, "task.size", ["0", "-5", "200000", "abc", "1.5"]),
    *_values(M, "task.pretrain_rank", ["0", "1000", "-1"]),
    *_values(M, "task.final_rank", ["0", "1000"]),
    *_values(M, "task.n_obs", ["0", "1000000000", "-1"]),
    *_values(M, "task.pretrain_n_obs", ["0", "1000000000"]),
    *_values(M, "task.pretrain_task", ["foo"]),
    *_values(M, "task.shared_basis", ["maybe"]),
    *_values(M, "model.depth", ["0", "-1", "5000", "x", "[1,2]"]),
    *_values(M, "model.init", ["foo"]),
    *_values(M, "model.init_scale", ["0", "-1", "abc"]),
    *_values(M, "optim.lr", ["0", "-0.1", "inf", "abc"]),
    *_values(M, "switch.at_step", ["-1"]),
    ("train", [M, "switch.at_step=1000000000000"], "train.max_steps"),
    *_values(M, "train.steps_after_switch", ["-1"]),
    *_values(M, "train.max_steps", ["0", "1000000000000", "1e20"]),
    *_values(M, "log.every_n_steps", ["0", "-1"]),
    *_values(M, "log.sv_every_n_steps", ["0"]),
    *_values(M, "log.sv_top_k", ["0", "1000"]),
    *_values(M, "log.sv_log_every_n_steps", ["7", "0"]),
    *_values(M, "log.trace_every_n_steps", ["0"]),
    *_values(M, "log.figure_formats", ["[jpg]", "[]", "[png,png]"]),
    *_values(M, "tracking.timeout_s", ["0", "-1", "1000000"]),
    *_values(M, "tracking.retries", ["-1", "1000"]),
    *_values(M, "tracking.uri", ["htp://x", "sqlite:/x.db", "http://host:port", "ftp://host/x", "sqlite:///"]),
    *_values(M, "tracking.uri", ["http://127.0.0.1:1"]),
    *_values(M, "trainer.accelerator", ["tpu", "gpu"]),
    *_values(M, "trainer.dtype", ["float16"]),
    *_values(M, "trainer.steps_per_call", ["0"]),
    *_values(M, "trainer.checkpoint_every_n_steps", ["-1"]),
    *_values(M, "trainer.ckpt_path", ["/nonexistent/last.ckpt"]),
    *_values(M, "trainer.checkpoint_dir", ["/proc/cpl-cannot-write"]),
    *_values(M, "ode.kind", ["foo"]),
    *_values(M, "ode.every_n_steps", ["0"]),
    *_values(M, "ode.rtol", ["0"]),
    ("train", [M, "ode.enabled=true", "ode.kind=saxe", "model.depth=3"], "model.depth"),
    ("train", [M, "task.size=60000", "task.n_obs=10", "task.pretrain_rank=1", "task.final_rank=1"], "task.size"),
    ("train", [M, "model.dpeth=3"], "model.dpeth"),
    ("train", [M, "foo=1"], "foo"),
    ("train", [M, "task.sizee=3"], "task.sizee"),
    ("train", [M, "task.size={a:1}"], "task.size"),
    ("train", [M, "~callbacks.nosuch"], "callbacks"),
]

MULTIPATH = [
    *_values(P, "task.levels", ["-1", "7"]),
    *_values(P, "model.depth", ["0", "2000"]),
    *_values(P, "model.width", ["1", "1000000"]),
    *_values(P, "model.pathways", ["[a]", "[a,a]", "[1,b]"]),
    *_values(P, "model.init", ["foo"]),
    *_values(P, "model.init_scale", ["0"]),
    *_values(P, "model.init_noise", ["1", "-0.1"]),
    *_values(P, "train.max_steps", ["0", "1000000000000"]),
    *_values(P, "deficit.pathway", ["z"]),
    *_values(P, "deficit.start", ["-1"]),
    ("train", [P, "deficit.start=10", "deficit.end=5"], "deficit.end"),
    ("train", [P, "lesion.enabled=true", "lesion.mode=99"], "lesion.mode"),
    ("train", [P, "lesion.enabled=true", "lesion.start=-1"], "lesion.start"),
    ("train", [P, "lesion.enabled=true", "lesion.start=5", "lesion.end=2"], "lesion.end"),
    *_values(P, "ode.kind", ["foo"]),
    *_values(P, "ode.every_n_steps", ["0"]),
    *_values(P, "log.sv_top_k", ["0"]),
    *_values(P, "seed", ["-3"]),
    *_values(P, "optim.lr", ["-1"]),
]

SWEEP = [
    ("sweep", [S, "sweep.grid.optim.lr=[1,1.0]"], "sweep.grid.optim.lr"),
    ("sweep", [S, "sweep.grid.model.depth=[1,1]"], "sweep.grid.model.depth"),
    ("sweep", [S, "sweep.grid.model.depth=[]"], "sweep.grid.model.depth"),
    ("sweep", [S, "sweep.grid.model.depth=3"], "sweep.grid.model.depth"),
    ("sweep", [S, "sweep.grid.tracking.uri=[a,b]"], "sweep.grid.tracking.uri"),
    ("sweep", [S, "sweep.grid.name=[a,b]"], "sweep.grid.name"),
    ("sweep", [S, "sweep.metric=test/final_eror"], "sweep.metric"),
    ("sweep", [S, "sweep.onset_key=model.foo"], "sweep.onset_key"),
    ("sweep", [S, "sweep.group_by=switch.at_step"], "sweep.group_by"),
    ("sweep", [S, "sweep.threshold=-1"], "sweep.threshold"),
    ("sweep", [S, "sweep.executor=slurm"], "sweep.executor"),
    ("sweep", [S, "sweep.processes=-1"], "sweep.processes"),
    ("sweep", [S, "sweep.max_members=0"], "sweep.max_members"),
    ("sweep", [S, "sweep.torch_threads=0"], "sweep.torch_threads"),
    ("sweep", [S, "sweep.ray_cpus_per_task=0"], "sweep.ray_cpus_per_task"),
    ("sweep", [S, "sweep.foo=1"], "sweep.foo"),
    ("sweep", [S, "sweep.grid.model.depth=[0,1]"], "model.depth"),
    ("sweep", [S, "sweep.grid.model.dpeth=[1,2]"], "model.dpeth"),
    ("sweep", [S, "trainer.ckpt_path=/nonexistent.ckpt"], "trainer.ckpt_path"),
    ("sweep", [S, "tracking.enabled=false"], "tracking.enabled"),
    ("sweep", [S, "sweep.grid.seed=[-1,0]"], "seed"),
    ("sweep", [S, "sweep.grid.switch.at_step=[0,0.0]"], "switch.at_step"),
    ("sweep", [S, "sweep.metric=nonsense"], "sweep.metric"),
    ("sweep", [S, "tracking.uri=htp://x"], "tracking.uri"),
    ("sweep", [S, "trainer.accelerator=gpu"], "trainer.accelerator"),
]

COMMAND_LINE = [
    ("train", ["conf=nonexistent"], "nonexistent"),
    ("train", ["model.depth=3"], "conf=NAME"),
    ("train", [M, M], "conf=NAME"),
    ("train", [M, "foo"], "key=value"),
    ("train", [M, "=3"], "key=value"),
    ("train", [M, "--bogus"], "--bogus"),
    ("train", [M, "--cfg", "--plan"], "--cfg"),
    ("train", [S], "cpl sweep"),
    ("sweep", ["conf=nonexistent"], "nonexistent"),
    ("sweep", [M], "sweep.grid"),
]

#: bad conf files: name -> text (each loaded as conf=NAME from a temporary conf folder)
YAML_FILES = {
    "bad_indent": "model:\n  depth: 3\n   init: gaussian\n",
    "unclosed": "model: {depth: 3\n",
    "tab": "model:\n\tdepth: 3\n",
    "top_list": "- a\n- b\n",
    "cycle_a": "defaults: [cycle_b]\n",
    "cycle_b": "defaults: [cycle_a]\n",
    "missing_default": "defaults: [base/nosuch]\n",
    "defaults_not_list": "defaults: base/matcomp\n",
    "bad_quote": "name: 'abc\n",
    "unknown_key": "model:\n  dpeth: 3\n",
}
YAML = [
    ("train", ["conf=bad_indent"], "bad_indent.yaml:3"),
    ("train", ["conf=unclosed"], "unclosed.yaml:"),
    ("train", ["conf=tab"], "tab.yaml:2"),
    ("train", ["conf=top_list"], "top_list.yaml"),
    ("train", ["conf=cycle_a"], "cycle"),
    ("train", ["conf=missing_default"], "defaults"),
    ("train", ["conf=defaults_not_list"], "defaults"),
    ("train", ["conf=bad_quote"], "bad_quote.yaml:"),
    ("train", ["conf=unknown_key"], "model.dpeth"),
]

CASES = MATCOMP + MULTIPATH + SWEEP + COMMAND_LINE + YAML
