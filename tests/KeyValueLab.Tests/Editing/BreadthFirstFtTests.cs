using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Inference;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Editing;

/// <summary>Breadth-first FT (LocFT-BF) on the real stories260K model.</summary>
public sealed class BreadthFirstFtTests : IClassFixture<EditorTests.Stories>
{
    private readonly EditorTests.Stories _f;
    public BreadthFirstFtTests(EditorTests.Stories f) => _f = f;

    private static readonly EditRequest[] Requests =
    [
        EditorTests.Request,
        new("t2", "{} saw a big", "Tom", "dog", "cat"),
        new("t3", "{} liked to eat", "Ben", "cake", "apples"),
    ];

    /// <summary>
    /// The oracle, written apart from the editors: each request run alone (no padding, no batch), its loss the mean
    /// cross-entropy of its target tokens (plus EOS where <paramref name="appendEos"/>) computed with log_softmax in float64,
    /// a mini-batch's loss the mean of its requests', and Adam (β 0.9/0.999, ε 1e-8, bias-corrected, no weight decay) stepped
    /// in float64 over <paramref name="miniBatches"/> (indices into <paramref name="requests"/>) in order. Returns the weight
    /// after the last step; FT's steps are mini-batches of its one request.
    /// </summary>
    internal static double[] OracleAdam(EditorTests.Stories f, TorchSharp.Modules.Parameter weight, double lr, bool appendEos,
        IReadOnlyList<EditRequest> requests, IEnumerable<int[]> miniBatches)
    {
        var model = f.Loaded.Model;
        var w = weight.detach().to(float64).data<double>().ToArray();
        var m = new double[w.Length];
        var v = new double[w.Length];
        int t = 0;
        foreach (var part in miniBatches)
        {
            using var scope = NewDisposeScope();
            using (no_grad()) weight.copy_(tensor(w, weight.shape).to(float32));
            weight.requires_grad_(true);
            weight.grad?.zero_();
            foreach (int i in part)
            {
                var r = requests[i];
                var row = EditPrompts.Build(model, f.Tokenizer, r.Prompt, r.Subject, r.TargetNew);
                int[] target = appendEos ? [.. row.TargetIds, f.Tokenizer.EosId!.Value] : row.TargetIds;
                long[] ids = [.. row.PromptIds.Select(x => (long)x), .. target[..^1].Select(x => (long)x)];
                var logits = model.Forward(tensor(ids, [1, ids.Length]))[0].to(float64);
                var logProbs = nn.functional.log_softmax(logits, -1);
                int p = row.PromptIds.Length;
                var nll = -logProbs.index(tensor(Enumerable.Range(p - 1, target.Length).Select(x => (long)x).ToArray()),
                    tensor(target.Select(x => (long)x).ToArray())).mean();
                (nll / part.Length).backward();
            }
            var g = weight.grad!.to(float64).data<double>().ToArray();
            t++;
            for (int k = 0; k < w.Length; k++)
            {
                m[k] = 0.9 * m[k] + 0.1 * g[k];
                v[k] = 0.999 * v[k] + 0.001 * g[k] * g[k];
                double mHat = m[k] / (1 - Math.Pow(0.9, t)), vHat = v[k] / (1 - Math.Pow(0.999, t));
                w[k] -= lr * mHat / (Math.Sqrt(vHat) + 1e-8);
            }
        }
        weight.grad?.zero_();
        return w;
    }

    /// <summary>
    /// One epoch over three requests in mini-batches of two (two Adam steps, one optimiser state) equals the oracle. The second
    /// step's size depends on the ratio of the two mini-batches' gradients, so a per-batch optimiser reset, a token-summed
    /// instead of a per-request-mean loss, a lost EOS or a different batch split each move it by a sizeable fraction of lr.
    /// </summary>
    [Theory]
    [InlineData("values", null)]
    [InlineData("keys", "up")]
    public void OneEpochIsAdamOverTheShuffledMiniBatches(string side, string? kinds)
    {
        var model = _f.Loaded.Model;
        var hp = new BreadthFirstFtHyperparameters { Layers = [2], Side = side, KeyKinds = kinds, Epochs = 1, BatchSize = 2, Lr = 1e-3, EarlyStopLoss = 0, ShuffleSeed = 7 };
        var editor = new BreadthFirstFtEditor(hp);
        var memory = new FfnMemory(model);
        var weight = side == "values" ? memory.Values(2) : memory.Keys(2, KeyKind.Up);
        using var snapshot = WeightSnapshot.Take(model, editor.ParameterNames(model));
        double[] expected, got;
        int[] order = [0, 1, 2];
        new Random(hp.ShuffleSeed).Shuffle(order);
        try
        {
            var report = editor.Apply(model, _f.Tokenizer, Requests);
            Assert.Equal(2, report.Steps);
            got = weight.detach().to(float64).data<double>().ToArray();
            snapshot.Restore(model);
            expected = OracleAdam(_f, weight, hp.Lr, hp.AppendEos, Requests, order.Chunk(hp.BatchSize));
        }
        finally { snapshot.Restore(model); }
        var original = snapshot[editor.ParameterNames(model)[0]].to(float64).data<double>().ToArray();
        // Each step moves a weight by about lr (Adam's first steps are close to lr·sign(g)); the two float32 gradient paths
        // (padded batch vs one row at a time) differ by ~1e-6 of the gradient, which only matters where |g| is within that of
        // ε = 1e-8, so 1% of lr bounds the float error and a wrong step (off by ≥ 10% of lr on many weights) exceeds it.
        double worst = expected.Zip(got, (e, x) => Math.Abs(e - x)).Max();
        Assert.True(worst <= 1e-2 * hp.Lr + Fp32.Tolerance(original.Max(Math.Abs)), $"largest difference from the oracle {worst:E3} (lr {hp.Lr})");
        double moved = original.Zip(got, (o, x) => Math.Abs(o - x)).Max();
        Assert.InRange(moved, 0.5 * hp.Lr, 2.5 * hp.Lr);
    }

    /// <summary>Epochs over all requests make every new object likelier, keys or values, and change only the chosen matrix.</summary>
    [Theory]
    [InlineData("values", null)]
    [InlineData("keys", "up")]
    [InlineData("keys", "gate")]
    public void EpochsOverTheEditSetMakeEveryNewObjectLikelier(string side, string? kinds)
    {
        var model = _f.Loaded.Model;
        var hp = new BreadthFirstFtHyperparameters { Layers = [2], Side = side, KeyKinds = kinds, Epochs = 10, BatchSize = 2, Lr = 5e-3 };
        var editor = new BreadthFirstFtEditor(hp);
        var names = editor.ParameterNames(model);
        Assert.Single(names);
        var others = model.named_parameters().Select(p => p.name).Except(names).ToList();
        string before = ParameterHash.Sha256(model), othersBefore = ParameterHash.Sha256(model, others);
        using var snapshot = WeightSnapshot.Take(model, names);
        double[] Losses() => [.. Scorer.Score(model, _f.Tokenizer, [.. Requests.Select(r => (r.FilledPrompt, r.TargetNew))]).Select(s => s.Loss)];
        try
        {
            var pre = Losses();
            var report = editor.Apply(model, _f.Tokenizer, Requests);
            var post = Losses();
            for (int i = 0; i < Requests.Length; i++)
                Assert.True(post[i] < pre[i] - 0.5, $"{side} {kinds}: request {i} L(new) {pre[i]:F3} → {post[i]:F3} ({report})");
            Assert.InRange(report.Steps, 1, hp.Epochs * 2);
            Assert.Equal(othersBefore, ParameterHash.Sha256(model, others));
            Assert.True(EditRun.Changed(model, snapshot) > 0);
        }
        finally { snapshot.Restore(model); }
        Assert.Equal(before, ParameterHash.Sha256(model));
    }

    [Fact]
    public void FactoryLoadsThePublishedSettingsAndRefusesBothSides()
    {
        var model = _f.Loaded.Model;
        var editor = EditorFactory.Create(model, new EditorChoice { Method = "ft-bf", Layers = "3", Side = EditSide.Keys, KeyKinds = "up" });
        Assert.Equal("FT-BF", editor.Method);
        var hp = editor.Hyperparameters;
        Assert.Equal(25, (int)hp["epochs"]!);       // ICT-STAR/LocFT hparams/llama3-8b.yaml
        Assert.Equal(100, (int)hp["batch_size"]!);
        Assert.Equal(5e-4, (double)hp["lr"]!);
        Assert.Equal("keys", (string)hp["side"]!);
        Assert.Equal([new FfnMemory(model).KeysName(3, KeyKind.Up)], editor.ParameterNames(model));
        Assert.Throws<ArgumentException>(() => EditorFactory.Create(model, new EditorChoice { Method = "ft-bf", Layers = "3", Side = EditSide.Both }));
        Assert.Throws<ArgumentException>(() => EditorFactory.Create(model, new EditorChoice { Method = "ft-bf", Layers = "1,2" }));
    }
}
