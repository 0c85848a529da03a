"""How a sweep's trials map onto a cluster: runners, resources, concurrency, GPU packing, device time.

Plain arithmetic over trial specs (no Ray, no torch), shared by ``--dry-run`` and the launcher::

    specs = expand_grid("demo")
    conc = concurrency(specs, cpus=2, gpus=0, driver_cpu=0)
    print_plan(specs, conc, cpus=2, gpus=0, runner="auto")

A trial's *runner* (``runner_for``): ``inline`` runs a one-worker trial inside its (reused) Tune trial
process, ``train`` runs it as a Ray Train job with its workers; ``auto`` (the default) picks ``inline``
for one worker and ``train`` for several, so a grid may mix both.

GPU packing: ``gpus_per_worker`` may be a fraction below 1 (several workers share a GPU: Ray places at
most ``floor(1 / g)`` of them on one GPU) or a whole number (each worker holds that many GPUs); Ray
cannot place a worker on 1.5 GPUs, so such a value is refused, as is a trial that needs more GPUs than
the cluster has. Each GPU model's memory per trial (``sweeper.cluster.memory``, an estimate from its
shapes) says how many of its trials fit one GPU of ``--gpu-memory-gb`` and warns when the fraction is too small.
"""
from __future__ import annotations

import math

from sweeper.cluster.memory import memory_lines
from sweeper.grid.spec import TrialSpec
from sweeper.models.adapters import adapter_label

RUNNERS = ("auto", "train", "inline")


def runner_for(spec: TrialSpec, runner: str = "auto") -> str:
    """``train`` or ``inline`` for this trial: ``auto`` runs one-worker trials inline (no Train controller
    and worker process to start: ~1.4 s of fixed cost instead of ~10 s here) and sharded ones as Ray Train jobs."""
    if runner == "auto":
        return "inline" if spec.model["workers"] == 1 else "train"
    return runner


def inline_in_task(spec: TrialSpec, trial_slots: bool) -> bool:
    """Whether an inline trial runs in a Ray task (its Tune trial process, holding only a trial slot, relays
    its reports) rather than in its Tune trial process itself.

    A task lands in one of Ray's reused worker processes, which already hold torch, transformers and the
    model code, often from the stage-1 task that built the trial's target; a Tune trial process starts
    cold (~5 s on 2 CPUs). Not for GPU trials (Ray starts a fresh process for every GPU task, since
    CUDA binds a process to its first device), nor on a cluster without the trial-slot resource (the
    relaying process would take a CPU of its own)."""
    return trial_slots and not spec.model["gpus_per_worker"]


def runner_problems(specs: list[TrialSpec], runner: str) -> list[str]:
    """The inline runner holds one worker in the trial's own process: every model must have workers = 1."""
    if runner != "inline":
        return []
    return [f"--runner inline runs one worker per trial, but model {s.model['name']!r} has workers = "
            f"{s.model['workers']}; use --runner auto or train" for s in {s.model["name"]: s for s in specs}.values()
            if s.model["workers"] != 1]


def trial_shape(spec: TrialSpec) -> tuple[float, float]:
    """(CPUs, GPUs) the workers of one trial hold."""
    m = spec.model
    return m["workers"] * m["cpus_per_worker"], m["workers"] * m["gpus_per_worker"]


def gpu_trials_at_once(spec: TrialSpec, gpus: float) -> int:
    """How many copies of this trial fit on ``gpus`` GPUs at once: fractional workers share a GPU, at most
    floor(1 / g) per GPU; whole-GPU workers take g each."""
    g, w = spec.model["gpus_per_worker"], spec.model["workers"]
    if not g:
        return 10**9
    slots = math.floor(gpus) * math.floor(1 / g + 1e-9) if g < 1 else math.floor(gpus / g + 1e-9)
    return slots // w


def concurrency(specs: list[TrialSpec], cpus: float, gpus: float, driver_cpu: float) -> int:
    """How many trials may run at once so that none waits forever for workers.

    When a trial's own process holds a CPU (``driver_cpu`` > 0: a cluster without the trial-slot
    resource), drivers could take every CPU and starve their own workers, so the largest trial decides.
    Otherwise a trial holds its CPUs only once all of them are free (inline: its one worker; a Ray Train
    job: its workers' placement group, taken whole), so the smallest trial decides and a sharded trial
    simply waits for its turn."""
    shapes = [trial_shape(s)[0] for s in specs]
    need_cpu = (max(shapes) if driver_cpu else min(shapes)) + driver_cpu
    fit = math.floor(cpus / need_cpu) if need_cpu else len(specs)
    gpu_specs = [s for s in specs if s.model["gpus_per_worker"]]
    if gpu_specs:
        fit = min(fit, min(gpu_trials_at_once(s, gpus) for s in gpu_specs))
    return max(0, min(fit, len(specs)))


def capacity_problems(specs: list[TrialSpec], cpus: float, gpus: float | None, driver_cpu: float) -> list[str]:
    """One sentence per model that can never be placed (``gpus=None``: the GPU count is unknown)."""
    problems = []
    for s in {(s.model["name"], s.model["workers"]): s for s in specs}.values():
        c, _ = trial_shape(s)
        m = s.model
        g = m["gpus_per_worker"]
        if c + driver_cpu > cpus:
            problems.append(f"model {m['name']!r}: {m['workers']} workers x {m['cpus_per_worker']} CPUs "
                            f"(+{driver_cpu} for the trial) exceed the cluster's {cpus:g} CPUs; lower workers or cpus_per_worker")
        if g > 1 and g != int(g):
            problems.append(f"model {m['name']!r}: gpus_per_worker = {g:g} cannot be placed: a worker takes a "
                            f"fraction below 1 of one GPU or a whole number of GPUs")
        elif g and gpus is not None and gpu_trials_at_once(s, gpus) < 1:
            problems.append(f"model {m['name']!r}: {m['workers']} workers x {g:g} GPUs can never be placed on "
                            f"the cluster's {gpus:g} GPUs")
    return problems


def gpu_packing(specs: list[TrialSpec], gpus: float | None) -> list[str]:
    """Lines saying how each GPU model's trials pack onto the cluster's GPUs."""
    lines = []
    # full-weight and LoRA trials of one model pack differently: one line each
    for s in {(s.model["name"], s.model["workers"], adapter_label(s.model.get("adapter"))): s
              for s in specs if s.model["gpus_per_worker"]}.values():
        m, g = s.model, s.model["gpus_per_worker"]
        per_gpu = f"{math.floor(1 / g + 1e-9)} workers share a GPU" if g < 1 else f"{g:g} GPU(s) per worker"
        where = (f"{gpu_trials_at_once(s, gpus)} trial(s) at a time on {gpus:g} GPUs" if gpus is not None
                 else f"{m['workers'] * g:g} GPU(s) per trial; pass --num-gpus to see how they pack")
        lora = f" {adapter_label(m['adapter'])} trials" if m.get("adapter") else ""
        lines.append(f"GPU packing: {m['name']}{lora} ({m['workers']} worker(s) x {g:g} GPU): {per_gpu}, {where}")
    return lines


def cluster_line(cpus: float, gpus: float | None, conc: int) -> str:
    """What the cluster runs at once; a dry run of a GPU grid on a laptop says that nothing fits here
    instead of planning "0 trial(s) at a time"."""
    line = f"cluster: {cpus:g} CPUs, {gpus or 0:g} GPUs -> "
    if conc < 1:
        return line + "no trial fits here; pass --num-cpus and --num-gpus to plan for the cluster it will run on"
    return line + f"{conc} trial(s) at a time"


def print_plan(specs: list[TrialSpec], conc: int, cpus: float, gpus: float | None, runner: str = "auto",
               gpu_gb: float = 80.0) -> None:
    print(f"{len(specs)} trials, {len({s.target_hash for s in specs})} No-unlearn target(s)")
    for s in specs:
        c, g = trial_shape(s)
        lora = f", {adapter_label(s.model['adapter'])}" if s.model.get("adapter") else ""
        shard = f" {s.model['strategy'].upper()}" if s.model["workers"] > 1 else ""  # as the report's tables say it
        print(f"  {s.trial_id:<70} {s.model['workers']} worker(s){shard}, {c:g} CPU, {g:g} GPU, {s.steps} steps, "
              f"{runner_for(s, runner)}{lora}")
    for line in gpu_packing(specs, gpus):
        print(line)
    for line in memory_lines(specs, gpu_gb):   # per GPU model: GB per trial, how many fit, too small a fraction
        print(line)
    print(cluster_line(cpus, gpus, conc))
    print(device_time_estimate(specs))


def print_search_plan(search, conc: int, cpus: float, gpus: float | None, runner: str = "auto",
                      gpu_gb: float = 80.0) -> None:
    """The plan of a front search: its studies, what each searches and the trials its budget buys."""
    st = search.settings
    stop = st["early_stop"]
    # With rungs the budget is in steps: trials stopped at a rung leave their unrun steps to more configurations.
    budget = f"{search.budget} full trials' worth of steps (rungs: {st['fidelity']['rungs']})" if st.get("fidelity") \
        else f"{search.budget} trials at most"
    print(f"front search: {len(search.studies)} stud{'y' if len(search.studies) == 1 else 'ies'}, "
          f"{budget}, sampler {st['sampler']} (seed {st['seed']}"
          + (f"; repeatable, {st['repeatable']} configurations in flight" if st.get("repeatable") else "")
          + f"), objectives {st['objectives'][0]} "
          f"({search.senses[0]}) and {st['objectives'][1]} ({search.senses[1]}), early stop "
          + (f"after {stop['min_steps']} steps at margin {stop['margin']:g}" if stop else "off"))
    for study in search.studies:
        spec = study.spec({}, study.seeds[0])
        c, g = trial_shape(spec)
        ranges = ", ".join(f"{r.name} in [{r.low:g}, {r.high:g}]{' (log)' if r.log else ''}" for r in study.ranges)
        print(f"  {study.id:<60} {ranges or 'nothing to search'}: {study.configs} configuration(s) x "
              f"{len(study.seeds)} seed(s); {spec.model['workers']} worker(s), {c:g} CPU, {g:g} GPU, "
              f"{spec.steps} steps, {runner_for(spec, runner)}")
    for line in memory_lines(search.budget_specs(), gpu_gb):
        print(line)
    print(cluster_line(cpus, gpus, conc))
    print(device_time_estimate(search.budget_specs()))


def device_time_estimate(specs: list[TrialSpec]) -> str:
    """GPU trials from their FLOPs (sweeper.cluster.estimate: known model shapes, an assumed MFU); CPU trials at
    the tiny twins' measured ~0.08 s per step. Steps and AutoLR probes only: no evaluation or start-up."""
    from sweeper.cluster.estimate import ASSUMED_MFU, gpu_hours, trial_flops
    cpu = [s for s in specs if not trial_shape(s)[1]]
    gpu = [s for s in specs if trial_shape(s)[1]]
    flops = [trial_flops(s) for s in gpu]
    unknown = sorted({s.model["name"] for s, f in zip(gpu, flops) if f is None})
    parts = [f"{sum(s.steps for s in cpu) * 0.08 / 3600:.2f} CPU-worker-hours"] if cpu else []
    if gpu:
        hours = gpu_hours(sum(f["total"] for f in flops if f))
        parts.append(f"{hours:.2f} GPU-hours at {100 * ASSUMED_MFU:.0f} % of a 989 TFLOP/s bf16 peak"
                     + (f" (not counted, shapes unknown offline: {', '.join(unknown)})" if unknown else ""))
    return "estimated device time (steps and AutoLR probes; no evaluation, start-up or stage 1): " + "; ".join(parts)
