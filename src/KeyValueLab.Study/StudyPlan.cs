using System.Globalization;
using KeyValueLab.Checkpoints;
using KeyValueLab.Editing;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Organism;
using KeyValueLab.Tuning;

namespace KeyValueLab.Study;

/// <summary>What a unit is: one edit case, or one LoRA training run with its evaluation. Stored lower-case ("edit", "tune").</summary>
public enum UnitKind { Edit, Tune }

/// <summary>A group of units that run together: one editing condition × seed (its cases), or one tuning run (targets × seed).</summary>
public sealed record UnitGroup(string GroupId, UnitKind Kind, int Seed, EditCondition? Condition, string? Targets, IReadOnlyList<string> UnitIds, IReadOnlyList<EditCase> Cases);

/// <summary>Which part of a grid this process runs: shard <c>Index</c> of <c>Count</c> (1-based, as <c>--shard k/n</c>).</summary>
public sealed record Shard(int Index, int Count)
{
    public static Shard All { get; } = new(1, 1);

    public static Shard Parse(string text)
    {
        var parts = text.Split('/');
        if (parts.Length == 2 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int k)
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= 1 && k >= 1 && k <= n)
            return new Shard(k, n);
        throw new ArgumentException($"--shard must look like k/n with 1 <= k <= n, not \"{text}\"");
    }

    /// <summary>Groups are dealt round-robin in plan order, so shards get a similar mix of editing and tuning.</summary>
    public bool Takes(int groupIndex) => groupIndex % Count == Index - 1;

    public override string ToString() => $"{Index}/{Count}";
}

/// <summary>Where a study's inputs are once resolved: model, tokenizer, edit data, tasks and statistics corpus.</summary>
public sealed record StudyInputs(
    string ModelPath, string? TokenizerPath, string? EditDataPath, IReadOnlyDictionary<string, string> TaskPaths, string? StatsCorpus,
    string ModelLabel, OrganismBuild? Organism);

/// <summary>
/// The study's units in a fixed order, checked against the model and data before anything runs: unknown editors,
/// layers outside the model, LoRA targets the model lacks, unreadable or malformed data are refused with one line each.
/// </summary>
public sealed class StudyPlan
{
    private StudyPlan(StudySpec spec, StudyInputs inputs, ModelConfig config, IReadOnlyList<UnitGroup> groups, IReadOnlyList<EditCase> allCases,
        IReadOnlyList<TaskData> tasks, string studyFile)
    {
        (Spec, Inputs, Config, Groups, AllCases, Tasks, StudyFile) = (spec, inputs, config, groups, allCases, tasks, studyFile);
    }

    public StudySpec Spec { get; }
    public StudyInputs Inputs { get; }
    public ModelConfig Config { get; }
    public IReadOnlyList<UnitGroup> Groups { get; }
    public IReadOnlyList<EditCase> AllCases { get; }
    public IReadOnlyList<TaskData> Tasks { get; }
    public string StudyFile { get; }

    public int UnitCount => Groups.Sum(g => g.UnitIds.Count);

    /// <summary>Resolves "organism" inputs (building the organism when <paramref name="buildOrganism"/> says so).</summary>
    public static StudyInputs Resolve(StudySpec spec, Func<OrganismSpec, OrganismBuild> buildOrganism)
    {
        OrganismBuild? organism = null;
        string modelPath, label;
        if (spec.Model is "organism" or "organism:llama" or "organism:gpt2")
        {
            string arch = spec.Model == "organism:gpt2" ? "gpt2" : "llama";
            organism = buildOrganism(OrganismSpec.Default(arch));
            (modelPath, label) = (organism.ModelFolder, $"built-in organism ({arch}, {organism.Hash})");
        }
        else (modelPath, label) = (spec.Model, spec.Model);

        string? FromOrganism(string? value, Func<OrganismBuild, string> path, string field)
        {
            if (value != "organism") return value;
            if (organism is null) throw new InputException(field, "\"organism\" data needs the organism model (model: organism)");
            return path(organism);
        }
        string? editData = spec.Editing is null ? null : FromOrganism(spec.EditData, o => Path.Combine(o.DataFolder, "counterfact.json"), "edit_data");
        var tasks = spec.Tuning is null
            ? new Dictionary<string, string>()
            : spec.Tasks.ToDictionary(t => t.Key, t => FromOrganism(t.Value, o => Path.Combine(o.DataFolder, "tasks", t.Key), "tasks." + t.Key)!);
        string? stats = spec.Editing?.StatsCorpus is null ? null : FromOrganism(spec.Editing.StatsCorpus, o => Path.Combine(o.DataFolder, "corpus.txt"), "editing.stats_corpus");
        return new StudyInputs(modelPath, spec.Tokenizer, editData, tasks, stats, label, organism);
    }

    /// <summary>Checks everything that can be checked without running, and lays out the units.</summary>
    public static StudyPlan Build(StudySpec spec, StudyInputs inputs, string studyFile)
    {
        ModelConfig config;
        using (var checkpoint = Checkpoint.Open(inputs.ModelPath))
        {
            string source = checkpoint is HfCheckpoint hf ? Path.Combine(hf.SourcePath, HfCheckpoint.ConfigFile) : checkpoint.SourcePath;
            config = Architectures.ParseConfig(checkpoint.Config, source);
        }
        using var meta = ModelLoader.CreateOnMeta(config);
        var groups = new List<UnitGroup>();
        IReadOnlyList<EditCase> all = [];

        if (spec.Editing is { } editing)
        {
            string data = inputs.EditDataPath!;
            if (!File.Exists(data)) throw new InputException(data, "edit_data: no such file");
            all = EditDatasets.Load(data, editing.ZsreTarget);
            if (all.Count == 0) throw new InputException(data, "edit_data holds no records");
            if (inputs.StatsCorpus is { } corpus && corpus != "generated" && !File.Exists(corpus))
                throw new InputException(corpus, "editing.stats_corpus: no such file (use \"generated\", \"organism\" or a text file)");
            var memory = new FfnMemory(meta);
            foreach (var condition in editing.Conditions)
            {
                try
                {
                    var editor = EditorFactory.Create(meta, Choice(condition, inputs, editing));
                    editor.Scope.Matrices(memory);  // layer range and key kinds against this architecture
                    (editor as IDisposable)?.Dispose();
                }
                catch (ArgumentException e)
                {
                    throw new InputException(studyFile, $"editing run {condition.Id}: {e.Message}");
                }
            }
            foreach (int seed in spec.Seeds)
            {
                var order = TaskLoader.Permutation(all.Count, seed);
                var cases = order.Take(Math.Min(editing.Cases, all.Count)).Select(i => all[i]).ToList();
                foreach (var condition in editing.Conditions)
                {
                    string group = $"edit/{condition.Id}/s{seed}";
                    groups.Add(new UnitGroup(group, UnitKind.Edit, seed, condition, null, [.. cases.Select(c => $"{group}/{c.CaseId}")], cases));
                }
            }
        }

        var tasks = new List<TaskData>();
        if (spec.Tuning is { } tuning)
        {
            var names = meta.named_modules().Select(m => m.name).ToList();
            foreach (string targets in tuning.Targets)
            {
                IReadOnlyList<string> modules;
                try { modules = LoraConfig.ResolveTargets(targets, config.ModelType); }
                catch (ArgumentException e) { throw new InputException(studyFile, $"tuning target set \"{targets}\": {e.Message}"); }
                foreach (string module in modules)
                    if (!names.Any(n => n == module || n.EndsWith("." + module, StringComparison.Ordinal)))
                        throw new InputException(studyFile, $"tuning target set \"{targets}\": the model ({config.ModelType}) has no module \"{module}\"");
            }
            foreach (var (name, path) in inputs.TaskPaths)
            {
                if (!File.Exists(path) && !Directory.Exists(path)) throw new InputException(path, $"tasks.{name}: no such file or folder");
                // Evaluation rows do not depend on the seed; training rows do (shuffled), so the plan loads with the first seed.
                tasks.Add(TaskLoader.Load(name, path, Selection(tuning, spec.Seeds[0])));
            }
            foreach (int seed in spec.Seeds)
                foreach (string targets in tuning.Targets)
                {
                    string group = $"tune/{Label(targets)}/s{seed}";
                    groups.Add(new UnitGroup(group, UnitKind.Tune, seed, null, targets, [group], []));
                }
        }
        return new StudyPlan(spec, inputs, config, groups, all, tasks, studyFile);
    }

    /// <summary>The paper's names for target sets: "q,v" stays, "q,v,X" becomes "+X".</summary>
    public static string Label(string targets)
    {
        string t = string.Join(",", targets.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries));
        return t.StartsWith("q,v,", StringComparison.Ordinal) ? "+" + t[4..] : t;
    }

    public static TaskSelection Selection(TuningSpec tuning, int seed) =>
        new() { MaxTrain = tuning.MaxTrain, MaxEval = tuning.MaxEval, Shuffle = tuning.Shuffle, Seed = seed };

    /// <summary>The editor choice of a condition: side "keys:up" = keys with the up matrix only, and so on.</summary>
    public static EditorChoice Choice(EditCondition condition, StudyInputs inputs, EditingSpec editing)
    {
        var (side, kinds) = condition.Side switch
        {
            "keys:up" => (EditSide.Keys, "up"),
            "keys:gate" => (EditSide.Keys, "gate"),
            "keys" => (EditSide.Keys, (string?)null),
            _ => (EditSide.Values, null),
        };
        return new EditorChoice
        {
            Method = condition.Method,
            Side = side,
            KeyKinds = kinds,
            Layers = condition.Layers,
            Overrides = condition.Overrides,
            StatsCorpus = inputs.StatsCorpus,
            StatsSamples = editing.StatsSamples,
        };
    }
}
