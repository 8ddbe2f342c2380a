using System.CommandLine;
using System.Globalization;
using KeyValueLab.Organism;
using KeyValueLab.Study;

namespace KeyValueLab.Cli.Commands;

/// <summary>
/// <c>kvlab organism build</c>: the built-in model organism (a synthetic knowledge world and a small model trained
/// on it), cached per user by the hash of its spec; prints where it is and what it knows.
/// <c>kvlab organism export</c>: the world's datasets only (CounterFact, zsRE, classification tasks).
/// <c>kvlab organism ship</c>: writes the default study's organisms as the shipped copies the tool carries;
/// <c>kvlab organism check</c>: retrains them here and says how far each is from the shipped one.
/// </summary>
internal static class OrganismCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var command = new Command("organism", "The built-in model organism: a synthetic knowledge world and small models that know it.");
        command.Subcommands.Add(Build(stdout, stderr));
        command.Subcommands.Add(Export(stdout, stderr));
        command.Subcommands.Add(Ship(stdout, stderr));
        command.Subcommands.Add(Check(stdout, stderr));
        return command;
    }

    private sealed class WorldOptions
    {
        public readonly Option<long> Seed = new("--seed") { Description = "Seed of the world, the weights and the data order.", DefaultValueFactory = _ => new WorldConfig().Seed };
        public readonly Option<int> Subjects = new("--subjects") { Description = "Number of invented subjects.", DefaultValueFactory = _ => new WorldConfig().Subjects };
        public readonly Option<int> Relations = new("--relations") { Description = $"Number of relations (1..{RelationCatalog.All.Count}).", DefaultValueFactory = _ => new WorldConfig().Relations };
        public readonly Option<int> Objects = new("--objects") { Description = "Objects per relation (2..20).", DefaultValueFactory = _ => new WorldConfig().ObjectsPerRelation };
        public readonly Option<int> Trained = new("--trained-phrasings") { Description = "Statement phrasings (of 8) each fact is trained on; the rest are held out.", DefaultValueFactory = _ => new WorldConfig().TrainedPhrasings };
        public readonly Option<int> Cases = new("--cases") { Description = "CounterFact and zsRE records to export.", DefaultValueFactory = _ => new WorldConfig().CounterFactCases };

        public IEnumerable<Option> All => [Seed, Subjects, Relations, Objects, Trained, Cases];

        public WorldConfig Read(ParseResult p)
        {
            var c = new WorldConfig
            {
                Seed = p.GetValue(Seed), Subjects = p.GetValue(Subjects), Relations = p.GetValue(Relations),
                ObjectsPerRelation = p.GetValue(Objects), TrainedPhrasings = p.GetValue(Trained),
                CounterFactCases = p.GetValue(Cases), ZsreCases = p.GetValue(Cases),
            };
            try { c.Validate(); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
            return c;
        }
    }

    private static Command Build(TextWriter stdout, TextWriter stderr)
    {
        var world = new WorldOptions();
        var arch = new Option<string>("--arch") { Description = "Model architecture: llama (gate/up/down FFN) or gpt2 (c_fc/c_proj).", DefaultValueFactory = _ => "llama" };
        arch.AcceptOnlyFromAmong(OrganismModelConfig.Architectures);
        var hidden = new Option<int>("--hidden") { Description = "Model width.", DefaultValueFactory = _ => new OrganismModelConfig().HiddenSize };
        var layers = new Option<int>("--layers") { Description = "Transformer layers.", DefaultValueFactory = _ => new OrganismModelConfig().Layers };
        var epochs = new Option<int?>("--epochs") { Description = "Passes over the corpus (default: 30 for llama, 45 for gpt2)." };
        var threads = new Option<int>("--threads") { Description = "Torch threads for training (part of the cache key: results are bit-identical for a fixed count).", DefaultValueFactory = _ => new TrainingConfig().Threads };
        var cache = new Option<string?>("--cache") { Description = "Cache folder (default: $KVLAB_CACHE/organisms, else ~/.cache/keyvaluelab/organisms)." };
        var force = new Option<bool>("--force") { Description = "Rebuild even when a complete organism is cached." };

        var command = new Command("build", "Build (or reuse) an organism: world, datasets and a trained model; prints its folder and recall per relation.")
        {
            arch, hidden, layers, epochs, threads, cache, force,
        };
        foreach (var o in world.All) command.Options.Add(o);
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            var defaults = OrganismSpec.Default(parse.GetValue(arch)!);
            var spec = defaults with
            {
                World = world.Read(parse),
                Model = defaults.Model with { HiddenSize = parse.GetValue(hidden), Layers = parse.GetValue(layers) },
                Training = defaults.Training with { Epochs = parse.GetValue(epochs) ?? defaults.Training.Epochs, Threads = parse.GetValue(threads) },
            };
            try { spec.Model.Validate(); spec.Training.Validate(); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }

            Print(stdout, BuildWithProgress(spec, parse.GetValue(cache), parse.GetValue(force), stderr));
            return ExitCodes.Ok;
        }));
        return command;
    }

    private static Command Export(TextWriter stdout, TextWriter stderr)
    {
        var world = new WorldOptions();
        var output = new Option<string>("--out", "-o") { Description = "Folder to write the datasets into.", Required = true };
        var command = new Command("export", "Write the world's datasets (CounterFact, zsRE, BoolQ/COPA/CB-style tasks, world.json, corpus) without training.") { output };
        foreach (var o in world.All) command.Options.Add(o);
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            string folder = parse.GetValue(output)!;
            if (File.Exists(folder)) throw new InputException(folder, "is a file; expected a folder");
            var files = WorldExporter.Export(World.Generate(world.Read(parse)), folder);
            foreach (var f in files) stdout.WriteLine(f);
            return ExitCodes.Ok;
        }));
        return command;
    }

    /// <summary>The organisms of the built-in study (one per seed, one training thread), or of one of its seeds.</summary>
    internal static IReadOnlyList<OrganismSpec> DefaultStudySpecs(int? seed = null)
    {
        var seeds = StudySpec.Default().Seeds;
        if (seed is int s && !seeds.Contains(s)) throw new UsageException($"--seed {s}: the built-in study's seeds are {string.Join(", ", seeds)}");
        return new OrganismOptions().Specs("llama", seed is int one ? [one] : seeds);
    }

    private static Command Ship(TextWriter stdout, TextWriter stderr)
    {
        var output = new Option<string>("--out", "-o") { Description = "Folder of shipped organisms to write (the repository's organisms/).", Required = true };
        var cache = new Option<string?>("--cache") { Description = "Cache folder to train in or reuse from (default: $KVLAB_CACHE/organisms); shipped copies are never reused." };
        var command = new Command("ship", "Train (or reuse from the cache) the built-in study's organisms and write them as the shipped copies the tool installs " +
            "instead of training; other organisms in the folder are removed.") { output, cache };
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            string root = parse.GetValue(output)!;
            if (File.Exists(root)) throw new InputException(root, "is a file; expected a folder");
            var specs = DefaultStudySpecs();
            var builds = BuildManyWithProgress(specs, parse.GetValue(cache), stderr, ShippedOrganisms.None);
            var kept = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < specs.Count; i++)
            {
                var shipped = ShippedOrganisms.Ship(specs[i], builds[i], root);
                kept.Add(shipped.Hash);
                stdout.WriteLine($"shipped {shipped.Hash} (training seed {specs[i].TrainingSeed}): {shipped.Folder}, parameter SHA-256 {shipped.ParameterSha256}");
            }
            foreach (var old in ShippedOrganisms.List(root).Where(o => !kept.Contains(o.Hash)))
            {
                Directory.Delete(old.Folder, recursive: true);
                stdout.WriteLine($"removed {old.Hash} (not an organism of the built-in study any more)");
            }
            return ExitCodes.Ok;
        }));
        return command;
    }

    private static Command Check(TextWriter stdout, TextWriter stderr)
    {
        var seed = new Option<int?>("--seed") { Description = "Check only the organism of this training seed (default: all of the built-in study's)." };
        var cache = new Option<string?>("--cache") { Description = "Cache folder for the retrained organisms (default: $KVLAB_CACHE/organisms-retrained)." };
        var shippedRoot = new Option<string?>("--shipped") { Description = "Folder of shipped organisms (default: the one next to kvlab)." };
        var command = new Command("check", "Retrain the built-in study's organisms here and report how far each is from the shipped one " +
            "(max |Δw| per tensor, parameter SHA-256, recall and CounterFact baseline of both).") { seed, cache, shippedRoot };
        command.SetAction(parse => CommandRunner.Run(stderr, () =>
        {
            string retrained = parse.GetValue(cache) ?? CachePaths.Of("organisms-retrained");
            foreach (var spec in DefaultStudySpecs(parse.GetValue(seed)))
            {
                stderr.WriteLine($"organism {spec.Hash()} (training seed {spec.TrainingSeed}): retraining or reusing in {OrganismBuilder.FolderOf(spec, retrained)}");
                var check = ProgressRenderer.Run(stderr, (progress, log) => ShippedOrganisms.Check(spec, retrained, parse.GetValue(shippedRoot), log, p => progress.Report(
                    new WorkProgress("train", p.Step, p.TotalSteps, "organism") { Loss = p.Loss, LearningRate = p.LearningRate, TokensPerSecond = p.TokensPerSecond })));
                PrintCheck(stdout, check, spec.TrainingSeed);
            }
            return ExitCodes.Ok;
        }));
        return command;
    }

    internal static void PrintCheck(TextWriter o, OrganismCheck c, long seed)
    {
        var inv = CultureInfo.InvariantCulture;
        o.WriteLine($"organism {c.Hash} (training seed {seed}): parameters {(c.SameParameters ? "bit-identical to" : "differ from")} the shipped ones");
        o.WriteLine($"  parameter SHA-256 shipped   {c.ShippedParameterSha256}");
        o.WriteLine($"  parameter SHA-256 retrained {c.RetrainedParameterSha256}");
        o.WriteLine($"  {"tensor",-48} {"max |Δw|",10}");
        foreach (var t in c.Tensors) o.WriteLine(string.Create(inv, $"  {t.Name,-48} {t.MaxAbsDifference,10:G3}"));
        static (double Trained, double HeldOut) All(IReadOnlyList<RelationRecall> r) =>
            (100.0 * r.Sum(x => x.TrainedCorrect) / Math.Max(1, r.Sum(x => x.TrainedTotal)), 100.0 * r.Sum(x => x.HeldOutCorrect) / Math.Max(1, r.Sum(x => x.HeldOutTotal)));
        foreach (var (name, recall, cf) in new[] { ("shipped", c.ShippedRecall, c.ShippedCounterFact), ("retrained", c.RetrainedRecall, c.RetrainedCounterFact) })
        {
            var (trained, heldOut) = All(recall);
            o.WriteLine(string.Create(inv, $"  {name,-9} recall {trained:F1}% trained / {heldOut:F1}% held-out; unedited CounterFact ES {cf.EfficacyScore:F1} PS {cf.ParaphraseScore:F1} NS {cf.NeighborhoodScore:F1}"));
        }
    }

    private static void Print(TextWriter o, OrganismBuild b)
    {
        var inv = CultureInfo.InvariantCulture;
        o.WriteLine($"organism {b.Hash} {(b.Reused ? "(cached)" : "(built)")}");
        o.WriteLine($"model: {b.ModelFolder}");
        o.WriteLine($"data:  {b.DataFolder}");
        o.WriteLine(string.Create(inv, $"training: {b.TrainingSeconds:F1} s; this command: {b.BuildSeconds:F1} s"));
        o.WriteLine();
        o.WriteLine($"{"relation",-8} {"name",-24} {"trained",9} {"held-out",9}");
        foreach (var r in b.Recall)
            o.WriteLine(string.Create(inv, $"{r.RelationId,-8} {r.Name,-24} {r.Trained,8:F1}% {r.HeldOut,8:F1}%"));
        int tc = b.Recall.Sum(r => r.TrainedCorrect), tt = b.Recall.Sum(r => r.TrainedTotal), hc = b.Recall.Sum(r => r.HeldOutCorrect), ht = b.Recall.Sum(r => r.HeldOutTotal);
        o.WriteLine(string.Create(inv, $"{"all",-8} {"(top-1 recall of true objects)",-24} {100.0 * tc / Math.Max(1, tt),8:F1}% {100.0 * hc / Math.Max(1, ht),8:F1}%"));
        o.WriteLine();
        var cf = b.CounterFact;
        o.WriteLine(string.Create(inv, $"unedited on its CounterFact export ({cf.Cases} cases): ES {cf.EfficacyScore:F1}  PS {cf.ParaphraseScore:F1}  NS {cf.NeighborhoodScore:F1}"));
    }

    /// <summary>Builds (or reuses) several organisms (side by side when each trains on one thread), one progress bar each.</summary>
    internal static IReadOnlyList<OrganismBuild> BuildManyWithProgress(IReadOnlyList<OrganismSpec> specs, string? cache, TextWriter stderr, string? shipped = null)
    {
        if (specs.Count == 1) return [BuildWithProgress(specs[0], cache, false, stderr, shipped)];
        foreach (var spec in specs) stderr.WriteLine($"organism {spec.Hash()} (training seed {spec.TrainingSeed}, {spec.Training.Threads} thread(s)): building or reusing in {OrganismBuilder.FolderOf(spec, cache)}");
        var gate = new object();
        var builds = ProgressRenderer.Run(stderr, (progress, log) => OrganismBuilder.BuildMany(specs, cache,
            (i, line) => { lock (gate) log($"organism {specs[i].Hash()}: {line}"); },
            (i, p) =>
            {
                lock (gate)
                    progress.Report(new WorkProgress($"train {specs[i].Hash()[..8]}", p.Step, p.TotalSteps, "organism")
                    { Loss = p.Loss, LearningRate = p.LearningRate, TokensPerSecond = p.TokensPerSecond });
            }, shipped: shipped));
        foreach (var b in builds) stderr.WriteLine(Outcome(b));
        return builds;
    }

    /// <summary>Builds (or reuses) an organism, drawing its training progress and log on <paramref name="stderr"/>.</summary>
    internal static OrganismBuild BuildWithProgress(OrganismSpec spec, string? cache, bool force, TextWriter stderr, string? shipped = null)
    {
        stderr.WriteLine($"organism {spec.Hash()}: building or reusing in {OrganismBuilder.FolderOf(spec, cache)}");
        var build = ProgressRenderer.Run(stderr, (progress, log) => OrganismBuilder.Build(spec, cache, force, log, p => progress.Report(
            new WorkProgress("train", p.Step, p.TotalSteps, "organism") { Loss = p.Loss, LearningRate = p.LearningRate, TokensPerSecond = p.TokensPerSecond }),
            default, shipped));
        stderr.WriteLine(Outcome(build));
        return build;
    }

    private static string Outcome(OrganismBuild b) => b.Reused ? $"organism reused ({b.Folder})"
        : b.Shipped ? $"organism installed from the shipped copy in {b.BuildSeconds:F0} s, no training ({b.Folder})"
        : $"organism built in {b.BuildSeconds:F0} s ({b.Folder})";
}
