using KeyValueLab.Cli;
using KeyValueLab.Cli.Commands;
using KeyValueLab.Models;
using KeyValueLab.Organism;
using KeyValueLab.Study;
using TorchSharp;

namespace KeyValueLab.Tests.Organism;

public class ShippedOrganismTests
{
    private const string ReShip = "dotnet run -c Release --project src/KeyValueLab.Cli -- organism ship --out organisms";

    private static readonly OrganismSpec Tiny = PretrainerTests.Tiny with
    {
        World = PretrainerTests.Tiny.World with { CounterFactCases = 12 },
        Training = PretrainerTests.Tiny.Training with { Epochs = 1, CheckpointEvery = 0 },
    };

    [Fact]
    public void TheDefaultStudysOrganismsAreTheShippedOnes()
    {
        var specs = new OrganismOptions().Specs("llama", StudySpec.Default().Seeds);
        var shipped = ShippedOrganisms.List();
        Assert.True(specs.Select(s => s.Hash()).Order(StringComparer.Ordinal).SequenceEqual(shipped.Select(o => o.Hash)),
            $"the built-in study's organisms are {string.Join(", ", specs.Select(s => s.Hash()))}, the shipped ones " +
            $"{string.Join(", ", shipped.Select(o => o.Hash))} (in {ShippedOrganisms.DefaultRoot}): the organism's spec changed; re-ship with `{ReShip}`");
        foreach (var spec in specs)
        {
            var copy = ShippedOrganisms.Find(spec.Hash())!;
            Assert.Equal(spec.Canonical(), copy.Spec);
            Assert.Equal(1, copy.TrainingThreads);
            Assert.Equal(copy.ModelSha256, ShippedOrganisms.FileSha256(Path.Combine(copy.ModelFolder, "model.safetensors")));
        }
        // Organisms trained on two threads are another spec: they train, as before.
        Assert.All(new OrganismOptions { Threads = 2 }.Specs("llama", StudySpec.Default().Seeds), s => Assert.Null(ShippedOrganisms.Find(s.Hash())));
    }

    [Fact]
    public void AShippedOrganismInstallsIntoAnEmptyCacheWithoutTraining()
    {
        using var dir = new TempDir();
        var trained = OrganismBuilder.Build(Tiny, dir.File("trained"), shipped: ShippedOrganisms.None);
        var copy = ShippedOrganisms.Ship(Tiny, trained, dir.File("shipped"));
        Assert.Equal(Tiny.Hash(), copy.Hash);
        Assert.False(File.Exists(Path.Combine(copy.Folder, "data", "counterfact.json")));   // only the model travels

        int steps = 0;
        var installed = OrganismBuilder.Build(Tiny, dir.File("cache"), onProgress: _ => steps++, shipped: dir.File("shipped"));
        Assert.Equal(0, steps);
        Assert.True(installed.Shipped);
        Assert.False(installed.Reused);
        Assert.Equal(0, installed.TrainingSeconds);
        Assert.Equal(File.ReadAllBytes(Path.Combine(trained.ModelFolder, "model.safetensors")), File.ReadAllBytes(Path.Combine(installed.ModelFolder, "model.safetensors")));
        foreach (string data in new[] { "counterfact.json", "corpus.txt", "world.json", "tasks/boolq/train.jsonl" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(trained.DataFolder, data)), File.ReadAllBytes(Path.Combine(installed.DataFolder, data)));
        Assert.Equal(trained.Recall, installed.Recall);   // measured on the installed model, as on the trained one
        Assert.Equal(trained.CounterFact, installed.CounterFact);

        var again = OrganismBuilder.Build(Tiny, dir.File("cache"), onProgress: _ => steps++, shipped: dir.File("shipped"));
        Assert.True(again.Reused && again.Shipped);
        Assert.Equal(0, steps);

        // Another spec (here another training seed) has no shipped copy and trains.
        var other = Tiny with { Training = Tiny.Training with { Seed = 7 } };
        var built = OrganismBuilder.Build(other, dir.File("cache"), onProgress: _ => steps++, shipped: dir.File("shipped"));
        Assert.False(built.Shipped);
        Assert.True(steps > 0);
    }

    [Fact]
    public void ADamagedShippedCopyIsRefusedAndLeavesNoCompleteEntry()
    {
        using var dir = new TempDir();
        var trained = OrganismBuilder.Build(Tiny, dir.File("trained"), shipped: ShippedOrganisms.None);
        var copy = ShippedOrganisms.Ship(Tiny, trained, dir.File("shipped"));
        string weights = Path.Combine(copy.ModelFolder, "model.safetensors");
        var bytes = File.ReadAllBytes(weights);
        bytes[^1] ^= 1;
        File.WriteAllBytes(weights, bytes);
        var e = Assert.Throws<InputException>(() => OrganismBuilder.Build(Tiny, dir.File("cache"), shipped: dir.File("shipped")));
        Assert.Contains("SHA-256", e.Message);
        Assert.False(File.Exists(Path.Combine(OrganismBuilder.FolderOf(Tiny, dir.File("cache")), OrganismBuilder.ReportFile)));
    }

    [Fact]
    public void CheckReportsHowFarARetrainedOrganismIsFromTheShippedOne()
    {
        using var dir = new TempDir();
        var trained = OrganismBuilder.Build(Tiny, dir.File("trained"), shipped: ShippedOrganisms.None);
        ShippedOrganisms.Ship(Tiny, trained, dir.File("shipped"));

        // Retrained on the same machine and thread count: bit-identical.
        var same = ShippedOrganisms.Check(Tiny, dir.File("retrained"), dir.File("shipped"));
        Assert.True(same.SameParameters);
        Assert.All(same.Tensors, t => Assert.Equal(0, t.MaxAbsDifference));
        Assert.Equal(same.ShippedRecall, same.RetrainedRecall);

        // A shipped copy with one tensor moved by 0.25: the check names that tensor and only it.
        const string moved = "model.layers.1.mlp.down_proj.weight";
        using (var model = ModelLoader.Load(trained.ModelFolder))
        {
            using (torch.no_grad()) model.Model.named_parameters().Single(p => p.name == moved).parameter.add_(0.25f);
            model.Save(dir.File("moved"));
        }
        File.Copy(dir.File("moved/model.safetensors"), Path.Combine(dir.Path, "shipped", Tiny.Hash(), "model", "model.safetensors"), overwrite: true);
        var check = ShippedOrganisms.Check(Tiny, dir.File("retrained"), dir.File("shipped"));
        Assert.False(check.SameParameters);
        Assert.Equal(same.Tensors.Select(t => t.Name), check.Tensors.Select(t => t.Name));
        foreach (var t in check.Tensors)
            if (t.Name == moved) Assert.Equal(0.25, t.MaxAbsDifference, Fp32.Tolerance(1.0));
            else Assert.Equal(0, t.MaxAbsDifference);

        var output = new StringWriter();
        OrganismCommand.PrintCheck(output, check, Tiny.TrainingSeed);
        Assert.Contains("differ from the shipped", output.ToString());
        Assert.Contains(moved, output.ToString());
    }

    [Fact]
    public void CheckWithoutAShippedOrganismExitsWithCode2()
    {
        using var dir = new TempDir();
        var stderr = new StringWriter();
        Assert.Equal(2, Program.Run(["organism", "check", "--seed", "1", "--shipped", dir.Path, "--cache", dir.File("c")], new StringWriter(), stderr));
        Assert.Contains("no shipped organism", stderr.ToString());
        Assert.Equal(2, Program.Run(["organism", "check", "--seed", "9"], new StringWriter(), new StringWriter()));
    }
}
