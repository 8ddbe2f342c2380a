using KeyValueLab.Tuning;
using TorchSharp;
using TorchSharp.Modules;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Tuning;

/// <summary>Our AdamW and gradient clipping against TorchSharp's <c>optim.AdamW</c> and <c>nn.utils.clip_grad_norm_</c>.</summary>
public class OptimizerTests(ITestOutputHelper output)
{
    private static Parameter[] NewParameters(int seed)
    {
        var g = new Generator((ulong)seed);
        return [new Parameter(randn([8, 16], generator: g)), new Parameter(randn([16, 8], generator: g)), new Parameter(randn([5], generator: g))];
    }

    /// <summary>Gives every parameter the same fresh gradient (seeded by step), scaled so that clipping sometimes bites.</summary>
    private static void SetGradients(IReadOnlyList<Parameter> parameters, int step)
    {
        var g = new Generator((ulong)(1000 + step));
        foreach (var p in parameters)
            using (var grad = randn(p.shape, generator: g) * (step % 2 == 0 ? 0.05 : 3.0))
                p.grad = grad.clone();
    }

    private static double MaxDifference(IReadOnlyList<Parameter> a, IReadOnlyList<Parameter> b) =>
        a.Zip(b).Max(p => (p.First - p.Second).abs().max().item<float>());

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.01)]
    public void AdamWStepsMatchTorchSharp(double weightDecay)
    {
        var ours = NewParameters(1);
        var theirs = NewParameters(1);
        using var adam = new AdamWOptimizer(ours, lr: 2e-3, weightDecay: weightDecay);
        using var reference = optim.AdamW(theirs, lr: 2e-3, weight_decay: weightDecay);
        for (int step = 0; step < 6; step++)
        {
            double lr = 2e-3 * (step + 1) / 6;  // a warmup-like schedule: the learning rate changes between steps
            adam.LearningRate = lr;
            foreach (var group in reference.ParamGroups) group.LearningRate = lr;
            SetGradients(ours, step);
            SetGradients(theirs, step);
            adam.Step();
            reference.step();
            double diff = MaxDifference(ours, theirs);
            output.WriteLine($"wd {weightDecay}, step {step + 1}: max |Δparam| = {diff:G3}");
            Assert.True(diff <= 1e-6, $"step {step + 1}: {diff}");
        }
        var states = reference.state_dict().State;
        for (int i = 0; i < ours.Length; i++)
        {
            var state = (TorchSharp.Modules.AdamW.State)states[i];
            var (m, v) = adam.StateOf(i);
            Assert.Equal(state.step, adam.StepsOf(i));
            Assert.True((m - state.exp_avg).abs().max().item<float>() <= 1e-6);
            Assert.True((v - state.exp_avg_sq).abs().max().item<float>() <= 1e-6);
        }
    }

    [Fact]
    public void ParametersWithoutGradientAreSkippedAndZeroGradClears()
    {
        var ps = NewParameters(2);
        using var adam = new AdamWOptimizer(ps, lr: 1e-2, weightDecay: 0.1);
        var before = ps[1].detach().clone();
        SetGradients(ps, 0);
        adam.ZeroGrad();
        Assert.All(ps, p => Assert.Null(p.grad));
        using (var grad = ones(ps[0].shape)) ps[0].grad = grad.clone();
        adam.Step();
        Assert.Equal(1, adam.StepsOf(0));
        Assert.Equal(0, adam.StepsOf(1));
        Assert.True(ps[1].equal(before).all().item<bool>());  // no gradient: not even weight decay
    }

    [Theory]
    [InlineData(0.3)]   // clips
    [InlineData(1e3)]   // leaves the gradients alone
    public void ClipGradNormMatchesTorchSharp(double maxNorm)
    {
        for (int step = 0; step < 2; step++)
        {
            var ours = NewParameters(3);
            var theirs = NewParameters(3);
            SetGradients(ours, step);
            SetGradients(theirs, step);
            double normOurs = GradientClipping.ClipGradNorm(ours, maxNorm);
            double normTheirs = nn.utils.clip_grad_norm_(theirs, maxNorm);
            output.WriteLine($"max_norm {maxNorm}, step {step}: total norm {normOurs:G6} vs {normTheirs:G6}");
            Assert.Equal(normTheirs, normOurs, 1e-5 * Math.Max(1, normTheirs));
            double diff = ours.Zip(theirs).Max(p => (p.First.grad! - p.Second.grad!).abs().max().item<float>());
            Assert.True(diff <= 1e-6, $"{diff}");
        }
        Assert.Equal(0, GradientClipping.ClipGradNorm(NewParameters(4), 1.0));  // no gradients at all
    }

    [Fact]
    public void StateSavesAndLoadsAndTorchSharpStateCanBeTakenOver()
    {
        using var dir = new TempDir();
        var ps = NewParameters(5);
        using var adam = new AdamWOptimizer(ps, lr: 1e-3);
        for (int step = 0; step < 3; step++) { SetGradients(ps, step); adam.Step(); }
        string path = Path.Combine(dir.Path, "optimizer.safetensors");
        adam.Save(path);

        using var restored = new AdamWOptimizer(ps, lr: 1e-3);
        restored.Load(path);
        for (int i = 0; i < ps.Length; i++)
        {
            Assert.Equal(adam.StepsOf(i), restored.StepsOf(i));
            Assert.True(adam.StateOf(i).ExpAvg.equal(restored.StateOf(i).ExpAvg).all().item<bool>());
            Assert.True(adam.StateOf(i).ExpAvgSq.equal(restored.StateOf(i).ExpAvgSq).all().item<bool>());
        }
        using var other = new AdamWOptimizer(NewParameters(5).Take(2), lr: 1e-3);
        Assert.Throws<InputException>(() => other.Load(path));

        // A checkpoint written by TorchSharp's AdamW (optimizer.bin before this optimizer existed).
        var theirs = NewParameters(5);
        using var reference = optim.AdamW(theirs, lr: 1e-3);
        for (int step = 0; step < 3; step++) { SetGradients(theirs, step); reference.step(); }
        using var takeOver = new AdamWOptimizer(theirs, lr: 1e-3);
        takeOver.LoadFrom(reference);
        Assert.Equal(3, takeOver.StepsOf(0));
        Assert.True((takeOver.StateOf(1).ExpAvgSq - adam.StateOf(1).ExpAvgSq).abs().max().item<float>() <= 1e-6);
        // ... and read from its file when ours is missing.
        string legacy = Path.Combine(dir.Path, "optimizer.bin");
        reference.save_state_dict(legacy);
        using var fromFile = new AdamWOptimizer(theirs, lr: 1e-3);
        fromFile.Load(Path.Combine(dir.Path, "missing.safetensors"), legacyPath: legacy);
        Assert.Equal(3, fromFile.StepsOf(2));
        Assert.True(fromFile.StateOf(0).ExpAvg.equal(takeOver.StateOf(0).ExpAvg).all().item<bool>());
    }
}
