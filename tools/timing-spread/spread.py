"""Per run folder and organism, the mean over paired cases of ln(keys:up CPU s / values CPU s) (FT, layer 1), written
to ratios.csv; then the SDs over runs that PaperClaims.TimingMachineSd / TimingOrganismMachineSd hold.
Usage: python3 spread.py RUNS_DIR > ratios.csv   (run folders named <kernels>-<repeat>, as measure.sh writes them)"""
import glob, json, math, os, sqlite3, statistics, sys

kernels = {"native": "AVX-512", "AVX2": "AVX2", "AVX": "AVX"}
rows = []
for db in sorted(glob.glob(os.path.join(sys.argv[1], "*", "results.db"))):
    run = os.path.basename(os.path.dirname(db))
    isa, rep = run.split("-")
    pairs = {}
    for (result,) in sqlite3.connect(db).execute("select result from units where kind = 'edit'"):
        u = json.loads(result)
        pairs.setdefault((u["organism"], u["case_id"]), {})[u["side"]] = u["cpu_seconds"]
    for o in sorted({o for o, _ in pairs}):
        logs = [math.log(v["keys:up"] / v["values"]) for (oo, _), v in pairs.items() if oo == o]
        rows.append((run, kernels[isa], rep, o, len(logs), sum(logs) / len(logs)))
print("run,kernels,repeat,organism,cases,mean_ln_ratio")
for r in rows:
    print(f"{r[0]},{r[1]},{r[2]},{r[3]},{r[4]},{r[5]:.6f}")

runs = sorted({r[0] for r in rows})
organisms = sorted({r[3] for r in rows})
value = {(r[0], r[3]): r[5] for r in rows}
pooled = [statistics.mean(value[(run, o)] for o in organisms) for run in runs]
s_pool = statistics.stdev(pooled)
s_org = math.sqrt(statistics.mean(statistics.stdev(value[(run, o)] for run in runs) ** 2 for o in organisms))
print(f"# {len(runs)} runs: SD of the pooled ln ratio {s_pool:.4f}; per-organism SD (root mean square) {s_org:.4f}", file=sys.stderr)
