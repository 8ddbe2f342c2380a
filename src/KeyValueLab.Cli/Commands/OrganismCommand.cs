using System.CommandLine;
using System.Globalization;
using KeyValueLab.Organism;

namespace KeyValueLab.Cli.Commands;

/// <summary>
/// <c>kvlab organism build</c>: the built-in model organism (a synthetic knowledge world and a small model trained
/// on it), cached per user by the hash of its spec; prints where it is and what it knows.
/// <c>kvlab organism export</c>: the world's datasets only (CounterFact, zsRE, classification tasks).
/// </summary>
internal static class OrganismCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var command = new Command("organism", "The built-in model organism: a synthetic knowledge world and small models that know it.");
        command.Subcommands.Add(Build(stdout, stderr));
        command.Subcommands.Add(Export(stdout, stderr));
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
    internal static IReadOnlyList<OrganismBuild> BuildManyWithProgress(IReadOnlyList<OrganismSpec> specs, string? cache, TextWriter stderr)
    {
        if (specs.Count == 1) return [BuildWithProgress(specs[0], cache, false, stderr)];
        foreach (var spec in specs) stderr.WriteLine($"organism {spec.Hash()} (training seed {spec.TrainingSeed}, {spec.Training.Threads} thread(s)): building or reusing in {OrganismBuilder.FolderOf(spec, cache)}");
        var gate = new object();
        var builds = ProgressRenderer.Run(stderr, (progress, log) => OrganismBuilder.BuildMany(specs, cache,
            (i, line) => { lock (gate) log($"organism {specs[i].Hash()}: {line}"); },
            (i, p) =>
            {
                lock (gate)
                    progress.Report(new WorkProgress($"train {specs[i].Hash()[..8]}", p.Step, p.TotalSteps, "organism")
                    { Loss = p.Loss, LearningRate = p.LearningRate, TokensPerSecond = p.TokensPerSecond });
            }));
        foreach (var b in builds) stderr.WriteLine(b.Reused ? $"organism reused ({b.Folder})" : $"organism built in {b.BuildSeconds:F0} s ({b.Folder})");
        return builds;
    }

    /// <summary>Builds (or reuses) an organism, drawing its training progress and log on <paramref name="stderr"/>.</summary>
    internal static OrganismBuild BuildWithProgress(OrganismSpec spec, string? cache, bool force, TextWriter stderr)
    {
        stderr.WriteLine($"organism {spec.Hash()}: building or reusing in {OrganismBuilder.FolderOf(spec, cache)}");
        var build = ProgressRenderer.Run(stderr, (progress, log) => OrganismBuilder.Build(spec, cache, force, log, p => progress.Report(
            new WorkProgress("train", p.Step, p.TotalSteps, "organism") { Loss = p.Loss, LearningRate = p.LearningRate, TokensPerSecond = p.TokensPerSecond })));
        stderr.WriteLine(build.Reused ? $"organism reused ({build.Folder})" : $"organism built in {build.BuildSeconds:F0} s ({build.Folder})");
        return build;
    }
}
