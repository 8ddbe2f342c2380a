using System.CommandLine;
using KeyValueLab.Tuning;

namespace KeyValueLab.Cli.Commands;

/// <summary>Options shared by <c>kvlab tune</c> and <c>kvlab tune-eval</c>.</summary>
internal static class TuningOptions
{
    public static Option<string[]> Tasks() => new("--task", "-t")
    {
        Description = "A task as NAME=PATH (repeat for several): NAME one of " + string.Join(", ", TaskLoader.Known) +
                      "; PATH a folder with train/val (or dev) files, or one file that is split.",
        Required = true,
        AllowMultipleArgumentsPerToken = true,
    };

    public static Option<bool> FourBit() => ModelOptions.FourBit();
    public static Option<int> MaxEval() => new("--max-eval") { Description = "Evaluation examples per task (the first N).", DefaultValueFactory = _ => new TaskSelection().MaxEval };
    public static Option<int> EvalBatch() => new("--eval-batch") { Description = "Prompts per batch for greedy generation.", DefaultValueFactory = _ => TuneEngine.DefaultEvalBatch };
    public static Option<bool> LabelLikelihood() => new("--label-likelihood") { Description = "Also report the constrained metric: accuracy of the most likely label." };

    /// <summary>Parses NAME=PATH specs.</summary>
    public static IReadOnlyList<(string Name, string Path)> ParseTasks(string[]? specs)
    {
        if (specs is null || specs.Length == 0) throw new UsageException("give at least one --task NAME=PATH");
        var result = new List<(string, string)>();
        foreach (string spec in specs)
        {
            int eq = spec.IndexOf('=');
            if (eq <= 0 || eq == spec.Length - 1) throw new UsageException($"--task \"{spec}\": expected NAME=PATH");
            string name;
            try { name = TaskLoader.Canonical(spec[..eq]); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
            result.Add((name, spec[(eq + 1)..]));
        }
        return result;
    }
}
