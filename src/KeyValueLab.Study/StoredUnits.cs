using System.Text.Json;

namespace KeyValueLab.Study;

/// <summary>
/// Reads the stored units back into report records, checking every row first: a known kind, a result that is a JSON
/// object of that kind's shape, its seed the row's seed, and per task as many outcomes as the count says. The first bad
/// row stops the read with one line naming the store and the unit, so <c>kvlab report</c> never fails inside the analysis.
/// </summary>
public static class StoredUnits
{
    public static (List<EditUnitResult> Edits, List<TuneUnitResult> Tunes) Read(string storePath, IReadOnlyList<UnitRecord> units) =>
        Read(storePath, units, out _);

    /// <summary>As <see cref="Read(string, IReadOnlyList{UnitRecord})"/>, with the lifelong units in <paramref name="lifelong"/>.</summary>
    public static (List<EditUnitResult> Edits, List<TuneUnitResult> Tunes) Read(string storePath, IReadOnlyList<UnitRecord> units, out List<LifelongUnitResult> lifelong)
    {
        var edits = new List<EditUnitResult>();
        var tunes = new List<TuneUnitResult>();
        lifelong = [];
        foreach (var u in units)
        {
            InputException Bad(string problem) => new(storePath, $"unit {u.UnitId}: {problem}; remove the row (the next kvlab study reruns the unit) or restore results.db from a copy");
            switch (u.Kind)
            {
                case "edit":
                    var edit = Parse<EditUnitResult>(u, Bad);
                    if (edit.Pre is null || edit.Post is null) throw Bad("result lacks its pre or post metrics");
                    if (edit.Seed != u.Seed) throw Bad($"result's seed {edit.Seed} is not the row's seed {u.Seed}");
                    if (!double.IsFinite(edit.Seconds) || edit.Seconds < 0) throw Bad($"seconds {edit.Seconds} is not a duration");
                    edits.Add(edit);
                    break;
                case "tune":
                    var tune = Parse<TuneUnitResult>(u, Bad);
                    if (tune.Seed != u.Seed) throw Bad($"result's seed {tune.Seed} is not the row's seed {u.Seed}");
                    if (tune.Tasks is null || tune.Tasks.Count == 0) throw Bad("result holds no task outcomes");
                    foreach (var t in tune.Tasks)
                    {
                        if (t is null || t.Task is null || t.Correct is null) throw Bad("a task outcome lacks its task or its per-example results");
                        if (t.Count < 0 || t.Correct.Count != t.Count) throw Bad($"task {t.Task}: count {t.Count} but {t.Correct.Count} per-example results");
                        if (!(t.Accuracy is >= 0 and <= 1)) throw Bad($"task {t.Task}: accuracy {t.Accuracy} is not in [0, 1]");
                    }
                    tunes.Add(tune);
                    break;
                case "lifelong":
                    var sequence = Parse<LifelongUnitResult>(u, Bad);
                    if (sequence.Seed != u.Seed) throw Bad($"result's seed {sequence.Seed} is not the row's seed {u.Seed}");
                    if (sequence.Cases is null || sequence.Cases.Count == 0) throw Bad("result holds no cases");
                    if (sequence.Cases.Any(c => c is null || c.CaseId is null || c.Pre is null || c.Post is null)) throw Bad("a case lacks its id or its pre or post metrics");
                    if (sequence.Checkpoints is null || sequence.Checkpoints.Any(c => c is null || c.Means is null || c.Edits < 1 || c.Edits > sequence.Cases.Count))
                        throw Bad($"a checkpoint is not a count of edits in [1, {sequence.Cases.Count}] with its means");
                    if (!double.IsFinite(sequence.Seconds) || sequence.Seconds < 0) throw Bad($"seconds {sequence.Seconds} is not a duration");
                    lifelong.Add(sequence);
                    break;
                default:
                    throw Bad($"unknown kind \"{u.Kind}\" (expected edit, lifelong or tune)");
            }
        }
        return (edits, tunes);
    }

    private static T Parse<T>(UnitRecord u, Func<string, InputException> bad) where T : class
    {
        try
        {
            return JsonSerializer.Deserialize<T>(u.Result, StudyRunner.Json) ?? throw bad("result is null");
        }
        catch (JsonException e)
        {
            throw bad($"result is not a stored {u.Kind} result ({e.Message.Split('.')[0]})");
        }
    }
}
