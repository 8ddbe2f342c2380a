using System.Text.Json.Nodes;
using KeyValueLab.Evaluation;
using KeyValueLab.Study;

namespace KeyValueLab.Tests.Study.Report;

/// <summary>Hand-made study results with a known answer: keys clearly better than values, or both sides identical.</summary>
internal static class SyntheticStudy
{
    public const int Cases = 40;
    public const int Examples = 60;
    public static readonly int[] Seeds = [1, 2];
    public static readonly string[] Tasks = ["boolq", "copa", "cb"];

    public static StudyInfo Info(int units) => new()
    {
        Name = "synthetic",
        Model = "organism:0123abcd",
        ModelType = "gpt2",
        ModelFingerprint = "0123abcd",
        EditData = "counterfact_500.json",
        CreatedUtc = "2026-01-01T00:00:00Z",
        Host = "test-host (2 cores)",
        Versions = "kvlab 0.1, TorchSharp 0.107.0, libtorch 2.10.0, .NET 10",
        Config = new JsonObject { ["name"] = "synthetic", ["edit"] = new JsonObject { ["methods"] = new JsonArray("FT"), ["sides"] = new JsonArray("keys", "values") } },
        UnitSeconds = 123.4,
        UnitsDone = units,
        UnitsTotal = units,
    };

    /// <summary>FT on keys and on values, every case under every seed; with <paramref name="keysBetter"/> keys win on every metric
    /// and values take twice as long; otherwise the two sides are identical.</summary>
    public static List<EditUnitResult> Edits(bool keysBetter)
    {
        var units = new List<EditUnitResult>();
        foreach (int seed in Seeds)
            for (int i = 0; i < Cases; i++)
                foreach (string side in (string[])["keys", "values"])
                {
                    bool good = side == "keys" && keysBetter;
                    int pattern = (i * 7 + seed) % 10;
                    var pre = new CaseMetrics { ES = pattern < 2 ? 100 : 0, PS = pattern < 3 ? 50 : 0, NS = 80, EM = -0.2, PM = -0.2, NM = 0.2, GE = 6.1 };
                    var post = new CaseMetrics
                    {
                        ES = good || pattern < 5 ? 100 : 0,
                        PS = good ? (pattern < 8 ? 100 : 50) : (pattern < 4 ? 100 : pattern < 6 ? 50 : 0),
                        NS = good ? (pattern < 9 ? 90 : 70) : (pattern < 5 ? 80 : 40),
                        EM = good ? 0.4 + pattern / 100.0 : 0.1 + pattern / 100.0,
                        PM = 0.1,
                        NM = 0.1,
                        RewriteExact = good ? 100 : 50,
                        GE = 6.0,
                    };
                    double seconds = (side == "values" && keysBetter ? 2.0 : 1.0) + pattern / 100.0;
                    units.Add(new EditUnitResult
                    {
                        Method = "FT", Side = side, Layers = "1", Seed = seed, Mode = "single", CaseId = $"case{i}",
                        Pre = pre, Post = post, Seconds = seconds, ParametersChanged = 3072,
                    });
                }
        return units;
    }

    /// <summary>Four LoRA target sets × seeds × tasks; with <paramref name="keysBetter"/> the keys variants get 85% right,
    /// +values 55%, q,v 50%; otherwise every target set gets the same examples right.</summary>
    public static List<TuneUnitResult> Tunes(bool keysBetter)
    {
        var units = new List<TuneUnitResult>();
        var accuracy = new Dictionary<string, int> { ["q,v"] = 50, ["+keys:up"] = 85, ["+keys:gate"] = 80, ["+values"] = 55 };
        foreach (var (label, percent) in accuracy)
            foreach (int seed in Seeds)
            {
                var tasks = Tasks.Select((task, t) =>
                {
                    bool[] correct = [.. Enumerable.Range(0, Examples).Select(i => ((i * 13 + t * 5 + seed) % 100) < (keysBetter ? percent : 60))];
                    double acc = correct.Count(c => c) / (double)correct.Length;
                    return new TaskOutcome(task, Examples, acc, acc * 0.9, acc * 0.95, correct);
                }).ToList();
                units.Add(new TuneUnitResult
                {
                    Label = label,
                    Targets = label == "q,v" ? ["q_proj", "v_proj"] : ["q_proj", "v_proj", label[1..]],
                    Seed = seed,
                    TrainableParameters = label == "q,v" ? 16384 : 40960,
                    AllParameters = 1_000_000,
                    TrainSeconds = (label == "+values" && keysBetter ? 90 : 60) + seed,
                    TokensPerSecond = 1500,
                    PeakResidentBytes = 512L << 20,
                    BaseBytesFp32 = 4_000_000,
                    BaseBytesStored = 4_000_000,
                    Tasks = tasks,
                });
            }
        return units;
    }

    public static StudyResults Both(bool keysBetter)
    {
        var edits = Edits(keysBetter);
        var tunes = Tunes(keysBetter);
        return new StudyResults(Info(edits.Count + tunes.Count), edits, tunes);
    }
}
