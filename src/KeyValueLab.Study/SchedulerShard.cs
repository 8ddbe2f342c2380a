using System.Globalization;

namespace KeyValueLab.Study;

/// <summary>
/// <c>--shard auto</c>: which shard this process is, read from the batch scheduler that started it.
/// A SLURM job array sets <c>SLURM_ARRAY_TASK_ID</c>, <c>SLURM_ARRAY_TASK_COUNT</c> and <c>SLURM_ARRAY_TASK_MIN</c>
/// (and <c>_MAX</c>, <c>_STEP</c>); shard = (ID − MIN) / STEP + 1 of COUNT, so <c>--array=0-7</c> and <c>--array=1-8</c>
/// both give shards 1/8 … 8/8. A Kubernetes Indexed Job sets only <c>JOB_COMPLETION_INDEX</c> (0-based): its count,
/// the Job's <c>completions</c>, is passed as <c>auto/N</c>. Anything missing, unparsable or inconsistent is refused
/// with one line rather than guessed, since a wrong guess silently runs some groups twice and others never.
/// </summary>
public static class SchedulerShard
{
    public static Shard Resolve(string? countText, Func<string, string?> environment, out string origin)
    {
        int? count = null;
        if (countText is not null)
            count = int.TryParse(countText, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= 1
                ? n : throw new ArgumentException($"--shard auto/N needs a whole number N >= 1, not \"{countText}\"");
        string? slurmId = environment("SLURM_ARRAY_TASK_ID"), k8sIndex = environment("JOB_COMPLETION_INDEX");
        if (slurmId is not null && k8sIndex is not null)
            throw new ArgumentException("--shard auto: both SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX are set; pass --shard k/n");
        if (slurmId is not null) return FromSlurm(slurmId, count, environment, out origin);
        if (k8sIndex is not null) return FromIndexedJob(k8sIndex, count, out origin);
        string hint = environment("SLURM_JOB_ID") is not null ? " (SLURM_JOB_ID is set: submit with sbatch --array)" : "";
        throw new ArgumentException($"--shard auto: neither a SLURM job array (SLURM_ARRAY_TASK_ID) nor a Kubernetes Indexed Job (JOB_COMPLETION_INDEX) is in the environment{hint}; pass --shard k/n");
    }

    private static Shard FromSlurm(string idText, int? passed, Func<string, string?> environment, out string origin)
    {
        long id = Number("SLURM_ARRAY_TASK_ID", idText);
        long count = Number("SLURM_ARRAY_TASK_COUNT", environment("SLURM_ARRAY_TASK_COUNT")
            ?? throw new ArgumentException("--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not"));
        long min = Number("SLURM_ARRAY_TASK_MIN", environment("SLURM_ARRAY_TASK_MIN")
            ?? throw new ArgumentException("--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_MIN is not"));
        long step = environment("SLURM_ARRAY_TASK_STEP") is string s ? Number("SLURM_ARRAY_TASK_STEP", s) : 1;
        if (count < 1) throw new ArgumentException($"--shard auto: SLURM_ARRAY_TASK_COUNT={count} is not a shard count");
        if (step < 1) throw new ArgumentException($"--shard auto: SLURM_ARRAY_TASK_STEP={step} must be at least 1");
        if (environment("SLURM_ARRAY_TASK_MAX") is string maxText && Number("SLURM_ARRAY_TASK_MAX", maxText) is long max && max != min + (count - 1) * step)
            throw new ArgumentException($"--shard auto: the SLURM array {min}-{max} with step {step} does not hold SLURM_ARRAY_TASK_COUNT={count} evenly spaced tasks (a list like --array=1,3,7?); use --array=A-B[:S]");
        long offset = id - min;
        if (offset < 0 || offset % step != 0 || offset / step >= count)
            throw new ArgumentException($"--shard auto: SLURM_ARRAY_TASK_ID={id} is not one of the {count} tasks from SLURM_ARRAY_TASK_MIN={min} in steps of {step}");
        if (passed is int p && p != count)
            throw new ArgumentException($"--shard auto/{p}: the SLURM array has SLURM_ARRAY_TASK_COUNT={count} tasks");
        var shard = new Shard((int)(offset / step) + 1, (int)count);
        origin = $"SLURM array task {id} (min {min}, step {step}, {count} tasks)";
        return shard;
    }

    private static Shard FromIndexedJob(string indexText, int? count, out string origin)
    {
        long index = Number("JOB_COMPLETION_INDEX", indexText);
        if (count is not int n)
            throw new ArgumentException($"--shard auto: JOB_COMPLETION_INDEX={index} (a Kubernetes Indexed Job) does not say how many shards there are; pass --shard auto/N with N = the Job's completions");
        if (index >= n)
            throw new ArgumentException($"--shard auto/{n}: JOB_COMPLETION_INDEX={index} is not below {n}; N must equal the Job's completions");
        origin = $"Kubernetes Indexed Job completion index {index} of {n}";
        return new Shard((int)index + 1, n);
    }

    private static long Number(string name, string text) =>
        long.TryParse(text.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long v) && v <= int.MaxValue
            ? v : throw new ArgumentException($"--shard auto: {name}=\"{text}\" is not a whole number");
}
