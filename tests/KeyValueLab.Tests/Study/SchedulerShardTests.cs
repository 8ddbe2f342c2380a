using KeyValueLab.Study;
using KeyValueLab.Tests.Cli;

namespace KeyValueLab.Tests.Study;

/// <summary><c>--shard auto</c> from SLURM job arrays and Kubernetes Indexed Jobs, with environments given as tables.</summary>
public class SchedulerShardTests
{
    private static Shard Auto(string text, params (string Name, string Value)[] variables)
    {
        var table = variables.ToDictionary(v => v.Name, v => v.Value, StringComparer.Ordinal);
        return Shard.Parse(text, name => table.GetValueOrDefault(name), out _);
    }

    private static string Refusal(string text, params (string Name, string Value)[] variables) =>
        Assert.Throws<ArgumentException>(() => Auto(text, variables)).Message;

    [Fact]
    public void SlurmArraysFromZeroOrOneAndWithStepsGiveEveryShardOnce()
    {
        // --array=0-7 and --array=1-8: the same eight shards.
        for (int min = 0; min <= 1; min++)
        {
            var shards = Enumerable.Range(min, 8).Select(id => Auto("auto",
                ("SLURM_ARRAY_TASK_ID", $"{id}"), ("SLURM_ARRAY_TASK_COUNT", "8"), ("SLURM_ARRAY_TASK_MIN", $"{min}"), ("SLURM_ARRAY_TASK_MAX", $"{min + 7}"))).ToList();
            Assert.Equal(Enumerable.Range(1, 8).Select(k => new Shard(k, 8)), shards);
        }
        // --array=10-40:10 → 4 tasks 10, 20, 30, 40.
        Assert.Equal(new Shard(3, 4), Auto("auto", ("SLURM_ARRAY_TASK_ID", "30"), ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "10"), ("SLURM_ARRAY_TASK_MAX", "40"), ("SLURM_ARRAY_TASK_STEP", "10")));
        // A passed count that agrees is accepted.
        Assert.Equal(new Shard(1, 2), Auto("auto/2", ("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_COUNT", "2"), ("SLURM_ARRAY_TASK_MIN", "5")));
    }

    [Fact]
    public void IndexedJobsTakeTheirCountFromTheCommandLine()
    {
        Assert.Equal(new Shard(1, 3), Auto("auto/3", ("JOB_COMPLETION_INDEX", "0")));
        Assert.Equal(new Shard(3, 3), Auto("auto/3", ("JOB_COMPLETION_INDEX", "2")));
        Assert.Contains("pass --shard auto/N", Refusal("auto", ("JOB_COMPLETION_INDEX", "2")));
        Assert.Contains("JOB_COMPLETION_INDEX=3 is not below 3", Refusal("auto/3", ("JOB_COMPLETION_INDEX", "3")));
    }

    [Fact]
    public void MissingOrInconsistentVariablesAreRefusedWithTheirNames()
    {
        Assert.Contains("neither a SLURM job array", Refusal("auto"));
        Assert.Contains("submit with sbatch --array", Refusal("auto", ("SLURM_JOB_ID", "77")));
        Assert.Contains("SLURM_ARRAY_TASK_COUNT is not", Refusal("auto", ("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_MIN", "0")));
        Assert.Contains("SLURM_ARRAY_TASK_MIN is not", Refusal("auto", ("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_COUNT", "4")));
        Assert.Contains("is not one of the 4 tasks", Refusal("auto", ("SLURM_ARRAY_TASK_ID", "4"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "0")));
        Assert.Contains("is not one of the 4 tasks", Refusal("auto", ("SLURM_ARRAY_TASK_ID", "0"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "1")));
        Assert.Contains("is not one of the 2 tasks", Refusal("auto", ("SLURM_ARRAY_TASK_ID", "15"), ("SLURM_ARRAY_TASK_COUNT", "2"),
            ("SLURM_ARRAY_TASK_MIN", "10"), ("SLURM_ARRAY_TASK_STEP", "10")));
        // --array=1,3,7: three tasks that are not an evenly spaced range.
        Assert.Contains("evenly spaced", Refusal("auto", ("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"), ("SLURM_ARRAY_TASK_MAX", "7")));
        Assert.Contains("SLURM_ARRAY_TASK_COUNT=4 tasks", Refusal("auto/3", ("SLURM_ARRAY_TASK_ID", "0"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "0")));
        Assert.Contains("is not a whole number", Refusal("auto", ("SLURM_ARRAY_TASK_ID", "x1"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "0")));
        Assert.Contains("both SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX", Refusal("auto/2", ("SLURM_ARRAY_TASK_ID", "0"), ("JOB_COMPLETION_INDEX", "0")));
        Assert.Contains("N >= 1", Refusal("auto/0", ("JOB_COMPLETION_INDEX", "0")));
    }

    [Fact]
    public void TheStudyCommandRefusesABadAutomaticShardWithExitCode2()
    {
        var (code, _, stderr) = Kvlab.Run("study", "--shard", "auto/zero", "--plan");
        Assert.Equal(2, code);
        Assert.Contains("--shard auto/N needs a whole number", stderr);
    }
}
