using KeyValueLab.Editing;
using KeyValueLab.Evaluation;
using KeyValueLab.Inference;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Editing;

/// <summary>AlphaEdit, Key-AlphaEdit and Key-MEMIT on the real stories260K model (Llama: gate and up keys).</summary>
public sealed class LifelongEditorTests : IClassFixture<EditorTests.Stories>
{
    private readonly EditorTests.Stories _f;
    public LifelongEditorTests(EditorTests.Stories f) => _f = f;

    private static readonly EditRequest Request = EditorTests.Request;

    private SecondMoments Stats(LocateEditHyperparameters hp) => new(hp.Mom2Corpus, hp.Mom2NSamples, hp.Mom2SampleTokens, _f.Cache.Path);

    private double NewLoss() => Scorer.Score(_f.Loaded.Model, _f.Tokenizer, [(Request.FilledPrompt, Request.TargetNew)])[0].Loss;

    /// <summary>The edit lowers L(new object) by at least <paramref name="minGain"/> nats and changes only the matrices in scope.</summary>
    private void CheckEdit(IKnowledgeEditor editor, double minGain)
    {
        var model = _f.Loaded.Model;
        string before = ParameterHash.Sha256(model);
        var names = editor.ParameterNames(model);
        var others = model.named_parameters().Select(p => p.name).Except(names).ToList();
        string othersBefore = ParameterHash.Sha256(model, others);
        using var snapshot = WeightSnapshot.Take(model, names);
        try
        {
            var log = editor.Prepare(model, _f.Tokenizer);
            double pre = NewLoss();
            editor.Apply(model, _f.Tokenizer, [Request]);
            double post = NewLoss();
            Assert.True(pre - post >= minGain, $"{editor.Method} {editor.Scope.Side}: L(new) {pre:F3} → {post:F3}; {string.Join("; ", log.Where(l => l.StartsWith("null", StringComparison.Ordinal)))}");
            Assert.Equal(othersBefore, ParameterHash.Sha256(model, others));
            Assert.True(EditRun.Changed(model, snapshot) > 0);
        }
        finally { snapshot.Restore(model); }
        Assert.Equal(before, ParameterHash.Sha256(model));
    }

    private static LocateEditHyperparameters Hp(string method) => EditorTests.SmallLocate(method);

    [Fact]
    public void AlphaEditMakesTheNewObjectMoreLikely()
    {
        var hp = Hp("AlphaEdit");
        // L2 = 10 (AlphaEdit's, for GPT-2 XL … Llama-3-8B keys) swamps this 172-memory model's keys: L(new) fell only 0.03.
        using var editor = new AlphaEditEditor(hp, new NullSpaceSettings(2e-2, 1e-2), [1, 2], Stats(hp));
        CheckEdit(editor, 0.5);
        Assert.Equal(1, editor.HistoryCount);
    }

    /// <summary>
    /// The published pair translated to the spectrum (docs/editing.md, "Translated settings": keep 0.7 of the directions,
    /// L2 = 0.05 × k × the largest kept eigenvalue) edits where the absolute one, on this model, hardly does (L(new) −0.03).
    /// (With L2 left at 10 the kept fraction alone still passes this; the L2 = r·k·cut arithmetic is checked against the plain
    /// formula in NullSpaceTests.) Key-AlphaEdit (up) with the same pair moved L(new) the wrong way here (2.226 → 6.125), so it has no such test
    /// (why: docs/editing.md, "Key-AlphaEdit on stories260K"; with P = I it is the least-squares update checked below).
    /// </summary>
    [Fact]
    public void AlphaEditWithTheTranslatedRelativeSettingsEditsThisSmallModel()
    {
        var hp = Hp("AlphaEdit");
        using var editor = new AlphaEditEditor(hp, new NullSpaceSettings(KeptFraction: 0.7, L2Relative: 0.05), [1, 2], Stats(hp));
        CheckEdit(editor, 0.5);
    }

    /// <summary>
    /// With P = I (kept fraction 1) Key-AlphaEdit is the unprojected key-side ridge least-squares update: for one request at
    /// one layer, ΔK = Δa hᵀ / (hᵀh + L2) with h the FFN input at the subject's last token. So every L2 gives the L2 = 0
    /// update scaled by hᵀh / (hᵀh + L2), and ΔK maps every input orthogonal to h to zero; h computed here on its own.
    /// (On this model that update makes L(new) worse, 2.226 → 5.63 at L2 = 0.01: docs/editing.md, "Key-AlphaEdit on stories260K".)
    /// </summary>
    [Fact]
    public void KeyAlphaEditWithPEqualToTheIdentityIsTheUnprojectedLeastSquaresUpdate()
    {
        var model = _f.Loaded.Model;
        var hp = Hp("KeyAlphaEdit") with { ContextTemplateLengthParams = [], FactToken = FactToken.Last };   // the key: "{}" only
        var memory = new FfnMemory(model);
        var kinds = EditScope.ParseKeyKinds("up");
        var scope = new EditScope(EditSide.Keys, [2], kinds);
        var prompt = EditPrompts.Build(model, _f.Tokenizer, Request.Prompt, Request.Subject, null, lookupLast: true);
        using var h = LookupActivations.AtLookup(model, [prompt], KeySideTargets.InputPoint(scope, memory, 2), input: true, _f.Tokenizer.EosId ?? 0)[0].to(ScalarType.Float64);
        double hh = h.dot(h).item<double>();
        Tensor Delta(double l2)
        {
            using var editor = new KeyAlphaEditEditor(hp, new NullSpaceSettings(L2: l2, KeptFraction: 1), [2], kinds, Stats(hp));
            var names = editor.ParameterNames(model);
            using var snapshot = WeightSnapshot.Take(model, names);
            var before = memory.Keys(2, KeyKind.Up).detach().clone();
            try
            {
                editor.Prepare(model, _f.Tokenizer);
                Assert.Equal(64, editor.Projector(2).Kept);
                editor.Apply(model, _f.Tokenizer, [Request]);
                return (memory.Keys(2, KeyKind.Up).detach() - before).to(ScalarType.Float64);
            }
            finally { snapshot.Restore(model); }
        }
        using var exact = Delta(0);
        using var ridged = Delta(4 * hh);   // a ridge of 4·hᵀh: a fifth of the exact update
        Assert.True(exact.norm().item<double>() > 1e-3, "the edit changed nothing");
        // float32 update against float64 arithmetic on it: 1e-4 of the norm.
        double scale = exact.norm().item<double>();
        double error = (ridged * 5 - exact).norm().item<double>();
        Assert.True(error <= 1e-4 * scale, $"ΔK(L2 = 4hᵀh)·5 vs ΔK(0): relative {error / scale:G3}");
        using var orthogonal = exact - exact.matmul(h).outer(h) / hh;   // ΔK (I − h hᵀ/hᵀh)
        Assert.True(orthogonal.norm().item<double>() <= 1e-4 * scale, $"ΔK off h: relative {orthogonal.norm().item<double>() / scale:G3}");
    }

    /// <remarks>Only the up matrix: m = act(g)·u is linear in u, so a partly reached target still moves m its way. With
    /// gate and up together (measured: L(new) 2.226 → 3.123) the two partly reached targets multiply through act and
    /// the edit goes the wrong way; see docs/editing.md.</remarks>
    [Theory]
    [InlineData("up")]
    public void KeyMemitMakesTheNewObjectMoreLikely(string kinds)
    {
        var hp = Hp("KeyMEMIT");
        using var editor = new KeyMemitEditor(hp, [1, 2], EditScope.ParseKeyKinds(kinds), Stats(hp));
        CheckEdit(editor, 0.5);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("up")]
    public void PreActivationChangesWriteTheResidualToFirstOrder(string? kinds)
    {
        var model = _f.Loaded.Model;
        var memory = new FfnMemory(model);
        var scope = new EditScope(EditSide.Keys, [2], EditScope.ParseKeyKinds(kinds));
        var keyKinds = KeySideTargets.Kinds(scope, memory);
        var prompt = EditPrompts.Build(model, _f.Tokenizer, Request.Prompt, Request.Subject, null);
        using var g = new torch.Generator(5);
        using var r = randn(1, memory.ModelDim, generator: g) * 1e-3;
        var changes = KeySideTargets.PreActivationChanges(model, [prompt], memory, 2, keyKinds, r, 0);
        var valuePoint = HookPoint.Linear(memory.ValuesName(2), memory.ValueModule(2));
        using var before = LookupActivations.AtLookup(model, [prompt], valuePoint, input: false, 0);
        var lookup = zeros(1, prompt.PromptIds.Length, 1);
        lookup[0, prompt.LookupIndex, 0] = tensor(1f);
        var hooks = keyKinds.Select((k, i) => HookPoint.Linear("key", memory.KeyModule(2, k)).Install((_, y) => y + lookup * changes[i].unsqueeze(1))).ToList();
        Tensor after;
        try { after = LookupActivations.AtLookup(model, [prompt], valuePoint, input: false, 0); }
        finally { foreach (var h in hooks) h.Dispose(); }
        using var written = after - before;
        // First order: the error is second order in ‖Δa‖ (~1e-3 here), so ≪ 1% of ‖r‖; a wrong Jacobian misses by ~100%.
        double error = ((written - r).norm() / r.norm()).item<float>();
        Assert.True(error < 1e-2, $"FFN output change vs r: relative error {error:G3}");
        after.Dispose();
        foreach (var c in changes) c.Dispose();
    }
}
