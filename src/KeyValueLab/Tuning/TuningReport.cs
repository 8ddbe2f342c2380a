using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace KeyValueLab.Tuning;

/// <summary>What a tuning or evaluation run reports: parameter counts, base-model memory, training summary and per-task metrics.</summary>
public sealed record TuningReport
{
    public string Model { get; init; } = "";
    public IReadOnlyList<string> Targets { get; init; } = [];
    public bool FourBit { get; init; }
    public long TrainableParameters { get; init; }
    public long AllParameters { get; init; }
    /// <summary>Bytes of the quantisable (frozen linear) weights in fp32, and as stored (NF4 when <see cref="FourBit"/>).</summary>
    public long BaseLinearBytesFp32 { get; init; }
    public long BaseLinearBytesStored { get; init; }
    public TrainResult? Training { get; init; }
    public IReadOnlyList<TaskMetrics> Tasks { get; init; } = [];

    public JsonObject ToJson()
    {
        static JsonNode? Num(double v) => double.IsFinite(v) ? JsonValue.Create(v) : null;
        return new JsonObject
        {
            ["model"] = Model,
            ["targets"] = new JsonArray([.. Targets.Select(t => (JsonNode?)JsonValue.Create(t))]),
            ["four_bit"] = FourBit,
            ["trainable_params"] = TrainableParameters,
            ["all_params"] = AllParameters,
            ["base_linear_bytes_fp32"] = BaseLinearBytesFp32,
            ["base_linear_bytes_stored"] = BaseLinearBytesStored,
            ["training"] = Training is null ? null : new JsonObject
            {
                ["steps"] = Training.Steps,
                ["epochs"] = Training.Epochs,
                ["epoch_losses"] = new JsonArray([.. Training.EpochLosses.Select(Num)]),
                ["tokens_per_second"] = Training.TokensPerSecond,
                ["seconds"] = Training.Seconds,
            },
            ["tasks"] = new JsonArray([.. Tasks.Select(t => (JsonNode?)new JsonObject
            {
                ["task"] = t.Task,
                ["n"] = t.Count,
                ["accuracy"] = t.Accuracy,
                ["accuracy_ci95"] = new JsonArray(t.Low95, t.High95),
                ["macro_f1"] = t.MacroF1,
                ["label_likelihood_accuracy"] = t.LabelLikelihoodAccuracy,
            })]),
        };
    }

    public string ToJsonString() => ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true });

    /// <summary>A plain-text per-task table (exact-match accuracy with its 95% interval, macro-F1, label-likelihood accuracy).</summary>
    public string Table()
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        sb.AppendLine(inv, $"{"task",-14} {"n",5} {"accuracy",9} {"95% CI",15} {"macro-F1",9} {"label-LL acc",12}");
        foreach (var t in Tasks)
            sb.AppendLine(inv, $"{t.Task,-14} {t.Count,5} {t.Accuracy,9:F3} {$"[{t.Low95:F3}, {t.High95:F3}]",15} {t.MacroF1,9:F3} {(t.LabelLikelihoodAccuracy is double l ? l.ToString("F3", inv) : "-"),12}");
        return sb.ToString();
    }
}
