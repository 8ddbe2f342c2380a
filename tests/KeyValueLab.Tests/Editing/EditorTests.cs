using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Inference;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Editing;

/// <summary>Every editor on the real stories260K model: the new object wins on the rewrite prompt (ES, rank 1), and only the scoped matrices change.</summary>
public sealed class EditorTests : IClassFixture<EditorTests.Stories>
{
    public sealed class Stories : IDisposable
    {
        public LoadedModel Loaded { get; } = ModelLoader.Load(TestData.Path("llama2c_stories260K/stories260K.bin"));
        public ITokenizer Tokenizer { get; } = TokenizerLoader.Load(TestData.Path("llama2c_stories260K/tok512.bin"));
        internal TempDir Cache { get; } = new();
        public void Dispose() { Loaded.Dispose(); Cache.Dispose(); }
    }

    private readonly Stories _f;
    public EditorTests(Stories f) => _f = f;

    internal static readonly EditRequest Request = new("t1", "{} went to the", "Lily", "moon", "park");

    internal static LocateEditHyperparameters SmallLocate(string method) => new()
    {
        Method = method, VNumGradSteps = 40, ClampNormFactor = 10, ContextTemplateLengthParams = [[5, 2]], Mom2NSamples = 32, Mom2SampleTokens = 64,
        VWeightDecay = 1e-3, Mom2UpdateWeight = 100,
    };

    private (double New, double True) Losses()
    {
        var s = Scorer.Score(_f.Loaded.Model, _f.Tokenizer, [(Request.FilledPrompt, Request.TargetNew), (Request.FilledPrompt, Request.TargetTrue!)]);
        return (s[0].Loss, s[1].Loss);
    }

    /// <summary>Rank (1 = likeliest) of the new object's first token after the rewrite prompt.</summary>
    private int NewObjectRank()
    {
        var model = _f.Loaded.Model;
        var row = EditPrompts.Build(model, _f.Tokenizer, Request.Prompt, Request.Subject, Request.TargetNew);
        using var scope = TorchSharp.torch.NewDisposeScope();
        using var noGrad = TorchSharp.torch.no_grad();
        var logits = model.Forward(TorchSharp.torch.tensor(row.PromptIds.Select(i => (long)i).ToArray(), [1, row.PromptIds.Length]))[0, -1];
        return (int)logits.gt(logits[row.TargetIds[0]]).sum().item<long>() + 1;
    }

    /// <summary>
    /// The edit's actual target: before, the model prefers the true object; after, the new object wins on the rewrite prompt
    /// (L(new) &lt; L(true), ROME's ES) and its first token is the likeliest next token; only the scoped matrices changed.
    /// </summary>
    /// <param name="firstTokenTop">False for FT's prompt_last objective, which spreads the target's tokens over the last prompt position.</param>
    private void CheckEdit(IKnowledgeEditor editor, bool firstTokenTop = true)
    {
        var model = _f.Loaded.Model;
        string before = ParameterHash.Sha256(model);
        var names = editor.ParameterNames(model);
        var others = model.named_parameters().Select(p => p.name).Except(names).ToList();
        string othersBefore = ParameterHash.Sha256(model, others);
        using var snapshot = WeightSnapshot.Take(model, names);
        try
        {
            editor.Prepare(model, _f.Tokenizer);
            var pre = Losses();
            Assert.True(pre.True < pre.New, $"pre-edit the model should prefer the true object: {pre}");
            Assert.NotEqual(1, NewObjectRank());
            var report = editor.Apply(model, _f.Tokenizer, [Request]);
            var post = Losses();
            Assert.True(post.New < post.True, $"{editor.Method} {editor.Scope.Side}: post-edit L(new)={post.New:F3} should be below L(true)={post.True:F3} (report {report})");
            if (firstTokenTop) Assert.Equal(1, NewObjectRank());
            Assert.Equal(othersBefore, ParameterHash.Sha256(model, others));
            Assert.True(EditRun.Changed(model, snapshot) > 0);
        }
        finally
        {
            snapshot.Restore(model);  // the model is shared by the class's tests
        }
        Assert.Equal(before, ParameterHash.Sha256(model));
    }

    private SecondMoments Stats(LocateEditHyperparameters hp) => new(hp.Mom2Corpus, hp.Mom2NSamples, hp.Mom2SampleTokens, _f.Cache.Path);

    [Theory]
    [InlineData("values", null, FtObjective.Target)]
    [InlineData("keys", "up", FtObjective.Target)]
    [InlineData("keys", "gate", FtObjective.PromptLast)]
    [InlineData("keys", "both", FtObjective.Target)]
    [InlineData("both", null, FtObjective.Target)]
    public void FineTuningMakesTheNewObjectWin(string side, string? kinds, FtObjective objective)
    {
        var hp = new FtHyperparameters { Layers = [2], Side = side, KeyKinds = kinds, Steps = 25, Lr = 5e-3, Objective = objective };
        CheckEdit(new FineTuneEditor(hp), firstTokenTop: objective != FtObjective.PromptLast);
    }

    [Fact]
    public void ConstrainedFineTuningStaysWithinEpsilon()
    {
        var model = _f.Loaded.Model;
        var hp = new FtHyperparameters { Layers = [1], Side = "values", Steps = 5, Lr = 1e-2, NormConstraint = 1e-3 };
        var editor = new FineTuneEditor(hp);
        using var snapshot = WeightSnapshot.Take(model, editor.ParameterNames(model));
        float maxDiff;
        try
        {
            editor.Apply(model, _f.Tokenizer, [Request]);
            var memory = new FfnMemory(model);
            maxDiff = (memory.Values(1).detach() - snapshot[memory.ValuesName(1)]).abs().max().item<float>();
        }
        finally { snapshot.Restore(model); }
        Assert.InRange(maxDiff, 1e-4f, 1e-3f + 1e-6f);
    }

    /// <summary>
    /// FT's steps are Adam on its one request's mean target cross-entropy, one optimiser state over the steps: three steps
    /// equal the float64 oracle of BreadthFirstFtTests (the request's mini-batch three times). A reset Adam state, another
    /// loss (summed tokens, the prompt_last objective) or a lost step moves the weights by a sizeable fraction of lr.
    /// </summary>
    [Theory]
    [InlineData("values", null)]
    [InlineData("keys", "gate")]
    public void FineTuningStepsAreAdamOnTheTargetCrossEntropy(string side, string? kinds)
    {
        var model = _f.Loaded.Model;
        var hp = new FtHyperparameters { Layers = [2], Side = side, KeyKinds = kinds, Steps = 3, Lr = 1e-3, EarlyStopLoss = 0 };
        var editor = new FineTuneEditor(hp);
        var memory = new FfnMemory(model);
        var weight = side == "values" ? memory.Values(2) : memory.Keys(2, KeyKind.Gate);
        using var snapshot = WeightSnapshot.Take(model, editor.ParameterNames(model));
        double[] expected, got;
        try
        {
            Assert.Equal(3, editor.Apply(model, _f.Tokenizer, [Request]).Steps);
            got = weight.detach().to(TorchSharp.torch.float64).data<double>().ToArray();
            snapshot.Restore(model);
            expected = BreadthFirstFtTests.OracleAdam(_f, weight, hp.Lr, appendEos: false, [Request], Enumerable.Repeat(new[] { 0 }, hp.Steps));
        }
        finally { snapshot.Restore(model); }
        var original = snapshot[editor.ParameterNames(model)[0]].to(TorchSharp.torch.float64).data<double>().ToArray();
        // As in BreadthFirstFtTests: float32 vs float64 gradients differ by ~1e-6 of g, which moves an Adam step by at most
        // 1% of lr where |g| is near ε; three steps, three such errors.
        double worst = expected.Zip(got, (e, x) => Math.Abs(e - x)).Max();
        Assert.True(worst <= 3e-2 * hp.Lr + Fp32.Tolerance(original.Max(Math.Abs)), $"largest difference from the oracle {worst:E3} (lr {hp.Lr})");
        Assert.InRange(original.Zip(got, (o, x) => Math.Abs(o - x)).Max(), 1.5 * hp.Lr, 4 * hp.Lr);
    }

    /// <summary>params.json of FT and FT-BF: the record with the layers and side actually edited, fields in the record's order.</summary>
    [Fact]
    public void GradientEditorsDescribeTheirRecordWithTheEditedScope()
    {
        var ft = new FtHyperparameters { Layers = [0], Side = "values", Steps = 4, NormConstraint = 1e-3 };
        var scope = new EditScope(EditSide.Keys, [2, 3], [KeyKind.Up]);
        var expected = HyperparameterFiles.ToJson(ft with { Layers = [2, 3], Side = "keys" });
        expected["key_kinds"] = "up";
        Assert.Equal(expected.ToJsonString(), new FineTuneEditor(ft, scope).Hyperparameters.ToJsonString());
        var bf = new BreadthFirstFtHyperparameters { Layers = [1], Side = "keys", KeyKinds = "gate", Epochs = 2 };
        Assert.Equal(HyperparameterFiles.ToJson(bf with { KeyKinds = "gate" }).ToJsonString(), new BreadthFirstFtEditor(bf).Hyperparameters.ToJsonString());
    }

    /// <summary>
    /// ROME and Key-ROME key the edit on the prompt's last token here, as the study does on small models: keyed on the subject
    /// ("Lily", position 1) this 64-wide, 172-memory model spills the edit onto the later tokens and the true object keeps
    /// winning, although the rank-one update is exact at the subject (RankOneUpdateMapsTheSubjectKeyExactlyToTheTarget).
    /// </summary>
    [Fact]
    public void RomeMakesTheNewObjectWin()
    {
        var hp = SmallLocate("ROME") with { FactToken = FactToken.Last };
        using var editor = new RomeEditor(hp, 2, Stats(hp));
        CheckEdit(editor);
    }

    [Theory]
    [InlineData("ROME", null)]
    [InlineData("KeyROME", "up")]
    [InlineData("KeyROME", "both")]
    public void RankOneUpdateMapsTheSubjectKeyExactlyToTheTarget(string method, string? kinds)
    {
        var model = _f.Loaded.Model;
        var memory = new FfnMemory(model);
        var hp = SmallLocate(method) with { VNumGradSteps = 5 };
        using LocateEditorBase editor = method == "ROME" ? new RomeEditor(hp, 3, Stats(hp)) : new KeyRomeEditor(hp, 3, EditScope.ParseKeyKinds(kinds), Stats(hp));
        using var snapshot = WeightSnapshot.Take(model, editor.ParameterNames(model));
        try
        {
        editor.Prepare(model, _f.Tokenizer);
        editor.Apply(model, _f.Tokenizer, [Request]);
        var modules = method == "ROME" ? [memory.ValueModule(3)]
            : EditScope.ParseKeyKinds(kinds)!.Select(k => memory.KeyModule(3, k)).ToList();
        var prompt = EditPrompts.Build(model, _f.Tokenizer, Request.Prompt, Request.Subject, null);
        for (int i = 0; i < modules.Count; i++)
        {
            var output = LookupActivations.AtLookup(model, [prompt], HookPoint.Linear("m", modules[i]), input: false, 0)[0];
            var target = TorchSharp.torch.tensor(editor.LastTargets[i]);
            double error = ((output - target).norm() / target.norm()).item<float>();
            Assert.True(error < 1e-4, $"{method} module {i}: relative error {error}");
        }
        }
        finally { snapshot.Restore(model); }
    }

    [Theory]
    [InlineData("up")]
    [InlineData("both")]
    public void KeyRomeMakesTheNewObjectWin(string kinds)
    {
        var hp = SmallLocate("KeyROME") with { FactToken = FactToken.Last };
        using var editor = new KeyRomeEditor(hp, 2, EditScope.ParseKeyKinds(kinds), Stats(hp));
        CheckEdit(editor);
    }

    [Fact]
    public void FactTokenLastLooksUpTheLastPromptToken()
    {
        var model = _f.Loaded.Model;
        var subjectLast = EditPrompts.Build(model, _f.Tokenizer, Request.Prompt, Request.Subject, Request.TargetNew);
        var last = EditPrompts.Build(model, _f.Tokenizer, Request.Prompt, Request.Subject, Request.TargetNew, lookupLast: true);
        Assert.Equal(1, subjectLast.LookupIndex);  // BOS, "Lily"
        Assert.Equal(last.PromptIds.Length - 1, last.LookupIndex);
        var hp = SmallLocate("ROME") with { FactToken = FactToken.Last };
        using var editor = new RomeEditor(hp, 2, Stats(hp));
        CheckEdit(editor);
    }

    [Fact]
    public void MemitMakesTheNewObjectWin()
    {
        var hp = SmallLocate("MEMIT");
        using var editor = new MemitEditor(hp, [1, 2], Stats(hp));
        CheckEdit(editor);
    }
}
