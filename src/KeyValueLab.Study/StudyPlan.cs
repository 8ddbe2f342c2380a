using System.Globalization;
using KeyValueLab.Checkpoints;
using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Organism;
using KeyValueLab.Tuning;

namespace KeyValueLab.Study;

/// <summary>What a unit is: one edit case, one LoRA training run with its evaluation, or one sequence of edits on one model
/// (a sequential condition on one replicate). Stored lower-case ("edit", "tune", "lifelong").</summary>
public enum UnitKind { Edit, Tune, Lifelong }

/// <summary>A group of units that run together: one editing condition × seed (its cases), or one tuning run (targets × seed).</summary>
public sealed record UnitGroup(string GroupId, UnitKind Kind, int Seed, EditCondition? Condition, string? Targets, IReadOnlyList<string> UnitIds, IReadOnlyList<EditCase> Cases)
{
    /// <summary>The organism (<see cref="StudyModel.Organism"/>) the group runs on; "" for a study of one given model.</summary>
    public string Organism { get; init; } = "";
    /// <summary>What tells this editing condition from another of the same method, side, layers and mode (<see cref="StudyPlan.Variant"/>).</summary>
    public string Variant { get; init; } = "";
}

/// <summary>
/// One model a study runs every condition on. For the built-in study, one of its K organisms: same world, training seed
/// <see cref="Seed"/>; <see cref="Organism"/> names it in unit ids and in the report ("s1-&lt;hash&gt;"). For a given model,
/// the one entry has Organism "" and no seed (the study's seeds then only draw cases and seed tuning runs).
/// </summary>
public sealed record StudyModel(string Organism, string ModelPath, string Label, int? Seed, OrganismBuild? Build);

/// <summary>Which part of a grid this process runs: shard <c>Index</c> of <c>Count</c> (1-based, as <c>--shard k/n</c>).</summary>
public sealed record Shard(int Index, int Count)
{
    public static Shard All { get; } = new(1, 1);

    /// <summary><c>k/n</c>, or <c>auto</c> / <c>auto/n</c> from the scheduler's environment (<see cref="SchedulerShard"/>).</summary>
    public static Shard Parse(string text) => Parse(text, Environment.GetEnvironmentVariable, out _);

    /// <summary>As <see cref="Parse(string)"/>, reading variables through <paramref name="environment"/>; <paramref name="origin"/> says where an automatic shard came from.</summary>
    public static Shard Parse(string text, Func<string, string?> environment, out string? origin)
    {
        origin = null;
        if (text == "auto" || text.StartsWith("auto/", StringComparison.Ordinal))
            return SchedulerShard.Resolve(text == "auto" ? null : text["auto/".Length..], environment, out origin);
        var parts = text.Split('/');
        if (parts.Length == 2 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int k)
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= 1 && k >= 1 && k <= n)
            return new Shard(k, n);
        throw new ArgumentException($"--shard must look like k/n with 1 <= k <= n, auto or auto/n, not \"{text}\"");
    }

    /// <summary>Groups are dealt round-robin in plan order, so shards get a similar mix of editing and tuning.</summary>
    public bool Takes(int groupIndex) => groupIndex % Count == Index - 1;

    public override string ToString() => $"{Index}/{Count}";
}

/// <summary>Where a study's inputs are once resolved: the model(s), tokenizer, edit data, tasks and statistics corpus.</summary>
public sealed record StudyInputs(
    IReadOnlyList<StudyModel> Models, string? TokenizerPath, string? EditDataPath, IReadOnlyDictionary<string, string> TaskPaths, string? StatsCorpus,
    string ModelLabel)
{
    /// <summary>The first model: the one whose config every condition is checked against (all organisms share one shape).</summary>
    public string ModelPath => Models[0].ModelPath;

    public bool HasOrganisms => Models[0].Build is not null;
}

/// <summary>How the built-in study's organisms are made: <see cref="Threads"/> torch threads each (part of their cache key; 1 trains
/// them side by side), from <see cref="Template"/> (null = <see cref="OrganismSpec.Default"/> of the architecture).</summary>
public sealed record OrganismOptions
{
    public int Threads { get; init; } = 1;
    public OrganismSpec? Template { get; init; }

    /// <summary>One spec per seed: the template with that training seed and thread count; the world stays the template's.</summary>
    public IReadOnlyList<OrganismSpec> Specs(string architecture, IReadOnlyList<int> seeds)
    {
        var template = Template ?? OrganismSpec.Default(architecture);
        return [.. seeds.Select(seed => template with { Training = template.Training with { Seed = seed, Threads = Threads } })];
    }
}

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
        order = new(() => groups.Select((g, i) => (g.GroupId, i)).ToDictionary(x => x.GroupId, x => x.i, StringComparer.Ordinal));
    }

    public StudySpec Spec { get; }
    public StudyInputs Inputs { get; }
    public ModelConfig Config { get; }
    public IReadOnlyList<UnitGroup> Groups { get; }
    public IReadOnlyList<EditCase> AllCases { get; }
    public IReadOnlyList<TaskData> Tasks { get; }
    public string StudyFile { get; }

    public int UnitCount => Groups.Sum(g => g.UnitIds.Count);

    /// <summary>A group's place in the run order (0-based), as stored with its units.</summary>
    public int Order(UnitGroup group) => order.Value[group.GroupId];

    private readonly Lazy<Dictionary<string, int>> order;

    /// <summary>
    /// Resolves "organism" inputs: with <c>model: organism</c>, every seed of the study is one organism (same world, that
    /// training seed), built by <paramref name="buildOrganisms"/> (all at once, so they can train side by side). The
    /// organisms' data ("organism" edit data, tasks, statistics corpus) is the shared world's, read from the first.
    /// </summary>
    public static StudyInputs Resolve(StudySpec spec, Func<IReadOnlyList<OrganismSpec>, IReadOnlyList<OrganismBuild>> buildOrganisms,
        OrganismOptions? organisms = null)
    {
        List<StudyModel> models;
        string label;
        if (spec.Model is "organism" or "organism:llama" or "organism:gpt2")
        {
            string arch = spec.Model == "organism:gpt2" ? "gpt2" : "llama";
            var builds = buildOrganisms((organisms ?? new OrganismOptions()).Specs(arch, spec.Seeds));
            models = [.. spec.Seeds.Zip(builds, (seed, b) => new StudyModel($"s{seed}-{b.Hash}", b.ModelFolder, $"built-in organism ({arch}, seed {seed}, {b.Hash})", seed, b))];
            label = models.Count == 1 ? models[0].Label
                : $"{models.Count} built-in organisms ({arch}, training seeds {string.Join(", ", spec.Seeds)}: {string.Join(", ", builds.Select(b => b.Hash))})";
        }
        else
        {
            models = [new StudyModel("", spec.Model, spec.Model, null, null)];
            label = spec.Model;
        }
        var first = models[0].Build;

        string? FromOrganism(string? value, Func<OrganismBuild, string> path, string field)
        {
            if (value != "organism") return value;
            if (first is null) throw new InputException(field, "\"organism\" data needs the organism model (model: organism)");
            return path(first);
        }
        string? editData = spec.Editing is null ? null : FromOrganism(spec.EditData, o => Path.Combine(o.DataFolder, "counterfact.json"), "edit_data");
        var tasks = spec.Tuning is null
            ? new Dictionary<string, string>()
            : spec.Tasks.ToDictionary(t => t.Key, t => FromOrganism(t.Value, o => Path.Combine(o.DataFolder, "tasks", t.Key), "tasks." + t.Key)!);
        string? stats = spec.Editing?.StatsCorpus is null ? null : FromOrganism(spec.Editing.StatsCorpus, o => Path.Combine(o.DataFolder, "corpus.txt"), "editing.stats_corpus");
        return new StudyInputs(models, spec.Tokenizer, editData, tasks, stats, label);
    }

    /// <summary>
    /// The replicates of a study: one per organism (its seed), or, for a given model, one per seed. Each replicate
    /// gets its own block of cases, so no case is counted twice.
    /// </summary>
    private static List<(StudyModel Model, int Seed)> Replicates(StudySpec spec, StudyInputs inputs) =>
        inputs.HasOrganisms ? [.. inputs.Models.Select(m => (m, m.Seed!.Value))] : [.. spec.Seeds.Select(seed => (inputs.Models[0], seed))];

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
            var lifelong = editing.Lifelong?.Conditions ?? [];
            foreach (var condition in editing.Conditions.Concat(lifelong))
            {
                try
                {
                    var editor = EditorFactory.Create(meta, Choice(condition, inputs, editing));
                    editor.Scope.MatrixNames(memory);  // layer range and key kinds against this architecture
                    (editor as IDisposable)?.Dispose();
                }
                catch (ArgumentException e)
                {
                    throw new InputException(studyFile, $"editing run {condition.Id}: {e.Message}");
                }
            }
            var variants = editing.Conditions.Select(c => Variant(c, editing.Conditions)).ToList();
            var ids = editing.Conditions.Select((c, i) => c.Id + (variants[i].Length == 0 ? "" : $"[{variants[i]}]")
                + (c.IsSequential ? "/" + EditModes.Name(c.Mode) : "")).ToList();
            var lifelongVariants = lifelong.Select(c => Variant(c, lifelong)).ToList();
            var lifelongIds = lifelong.Select((c, i) => c.Id + (lifelongVariants[i].Length == 0 ? "" : $"[{lifelongVariants[i]}]") + "/" + EditModes.Name(c.Mode)).ToList();
            if (ids.Concat(lifelongIds.Select(id => "lifelong " + id)).GroupBy(id => id).FirstOrDefault(g => g.Count() > 1) is { } twice)
                throw new InputException(studyFile, $"editing run {twice.Key} appears twice with the same settings");
            // One permutation of the data, cut into one block of cases per replicate: a case is drawn at most once among the
            // single edits. The lifelong arm's blocks come after all the single-edit blocks; where those leftover cases are too
            // few for the arm, a replicate's sequence goes on with that replicate's own single-edit cases (each sequence edits a
            // fresh copy of the replicate's model, a model state of its own, so no case is counted twice within a comparison,
            // and keys and values still edit the same cases).
            var replicates = Replicates(spec, inputs);
            int perReplicate = editing.Conditions.Count == 0 ? 0 : Math.Min(editing.Cases, all.Count / replicates.Count);
            if (perReplicate == 0 && editing.Conditions.Count > 0)
                throw new InputException(data, $"edit_data holds {all.Count} records, too few for one case per seed ({replicates.Count} seeds)");
            int offset = perReplicate * replicates.Count;
            int leftover = editing.Lifelong is { } arm ? Math.Min(arm.Edits, (all.Count - offset) / replicates.Count) : 0;
            int perSequence = editing.Lifelong is { } a ? Math.Min(a.Edits, leftover + perReplicate) : 0;
            if (editing.Lifelong is not null && perSequence == 0)
                throw new InputException(data, $"edit_data holds {all.Count} records: after {offset} single-edit cases none are left for the lifelong arm's {replicates.Count} sequences");
            var permutation = TaskLoader.Permutation(all.Count, spec.Seeds[0]);
            for (int r = 0; r < replicates.Count; r++)
            {
                var (model, seed) = replicates[r];
                var cases = permutation.Skip(r * perReplicate).Take(perReplicate).Select(i => all[i]).ToList();
                // Timed conditions run in a seeded random order per replicate, so run order cannot favour one side.
                foreach (int c in TaskLoader.Permutation(editing.Conditions.Count, seed))
                {
                    string group = $"edit/{Prefix(model)}{ids[c]}/s{seed}";
                    var condition = editing.Conditions[c];
                    groups.Add(new UnitGroup(group, condition.IsSequential ? UnitKind.Lifelong : UnitKind.Edit, seed, condition, null,
                        condition.IsSequential ? [group] : [.. cases.Select(x => $"{group}/{x.CaseId}")], cases)
                    {
                        Organism = model.Organism,
                        Variant = variants[c],
                    });
                }
                var sequence = permutation.Skip(offset + r * leftover).Take(leftover).Select(i => all[i]).Concat(cases.Take(perSequence - leftover)).ToList();
                foreach (int c in TaskLoader.Permutation(lifelong.Count, seed))
                {
                    string group = $"lifelong/{Prefix(model)}{lifelongIds[c]}/s{seed}";
                    groups.Add(new UnitGroup(group, UnitKind.Lifelong, seed, lifelong[c], null, [group], sequence)
                    {
                        Organism = model.Organism,
                        Variant = lifelongVariants[c],
                    });
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
            // Runs of one replicate share its seed (pairs by seed); their order is random per replicate, as for editing.
            foreach (var (model, seed) in Replicates(spec, inputs))
                foreach (int t in TaskLoader.Permutation(tuning.Targets.Count, seed))
                {
                    string targets = tuning.Targets[t];
                    string group = $"tune/{Prefix(model)}{Label(targets)}/s{seed}";
                    groups.Add(new UnitGroup(group, UnitKind.Tune, seed, null, targets, [group], []) { Organism = model.Organism });
                }
        }
        return new StudyPlan(spec, inputs, config, groups, all, tasks, studyFile);
    }

    private static string Prefix(StudyModel model) => model.Organism.Length == 0 ? "" : model.Organism + "/";

    /// <summary>
    /// What tells <paramref name="condition"/> from the other conditions of <paramref name="all"/> with the same
    /// <see cref="EditCondition.Id"/> (method, side, layers): its overrides that not all of them share, e.g. "lr=5e-3"
    /// for FT at a second budget. "" when no other condition has its id.
    /// </summary>
    public static string Variant(EditCondition condition, IReadOnlyList<EditCondition> all)
    {
        var same = all.Where(c => c.Id == condition.Id).ToList();
        if (same.Count < 2) return "";
        var common = same.Skip(1).Aggregate(same[0].Overrides.Texts.ToHashSet(StringComparer.Ordinal), (h, c) => { h.IntersectWith(c.Overrides.Texts); return h; });
        return string.Join(",", condition.Overrides.Texts.Where(o => !common.Contains(o)));
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
        return new EditorChoice
        {
            Method = condition.Method.Name,
            Side = condition.Side.Side,
            KeyKinds = condition.Side.KeyKinds,
            Layers = condition.Layers,
            Overrides = condition.Overrides,
            StatsCorpus = inputs.StatsCorpus,
            StatsSamples = editing.StatsSamples,
        };
    }
}
