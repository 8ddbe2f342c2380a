using System.Text.Json.Nodes;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Editing;

/// <summary>An editor that remembers earlier edits (AlphaEdit's K_p); a single edit must start from clean state.</summary>
public interface IEditHistory
{
    /// <summary>Edits remembered so far.</summary>
    long HistoryCount { get; }

    /// <summary>Forgets every earlier edit (call it whenever the model's weights are restored).</summary>
    void ResetHistory();
}

/// <summary>
/// MEMIT's batch procedure (Meng et al. 2023, memit_main.execute_memit), shared by MEMIT, AlphaEdit, Key-AlphaEdit and
/// Key-MEMIT: one target residual z per request after the last layer of the range (compute_z: ROME's target
/// optimisation at the block output), then for each layer l of the range in order, on the model as edited so far,
/// the requests' keys at l (inputs of the edited matrix at the subject's last token, averaged over the context
/// templates as compute_ks does: the mean of "{}" and the mean of the generated templates, weighted equally) and the
/// residual share R = (z − current z)/(layers left), handed to <see cref="UpdateLayer"/>.
/// </summary>
public abstract class MultiLayerEditorBase : LocateEditorBase, IKnowledgeEditor
{
    protected MultiLayerEditorBase(LocateEditHyperparameters hp, EditScope scope, SecondMoments statistics) : base(hp, scope, statistics)
    {
        if (scope.Layers.Count == 0) throw new ArgumentException("at least one layer", nameof(scope));
    }

    public override bool JointBatch => true;
    protected override bool UsesInverseMoment => false;

    /// <summary>The input of the matrices edited at <paramref name="layer"/>: the value module, or the (first) key module.</summary>
    protected abstract HookPoint InputPoint(FfnMemory memory, int layer);

    /// <summary>Changes layer <paramref name="layer"/>'s matrices for keys <c>[n, d_in]</c> and residual shares <c>[n, d_model]</c> of the requests, whose rewrite prompts (read at the lookup token) are <paramref name="own"/>.</summary>
    protected abstract void UpdateLayer(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditPrompt> own, FfnMemory memory, int layer, Tensor keys, Tensor residual);

    /// <summary>Called after every layer of a batch was updated (AlphaEdit: add the batch's keys to K_p).</summary>
    protected virtual void AfterBatch(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditRequest> requests, FfnMemory memory) { }

    /// <summary>Extra hyperparameters for params.json.</summary>
    protected virtual void Describe(JsonObject json) { }

    JsonObject IKnowledgeEditor.Hyperparameters
    {
        get
        {
            var json = Hyperparameters;
            Describe(json);
            return json;
        }
    }

    protected override IReadOnlyList<MomentPoint> MomentPoints(FfnMemory memory) =>
        [.. Scope.Layers.Select(l => new MomentPoint(l, Scope.Side == EditSide.Values ? "value-input" : "key-input", InputPoint(memory, l)))];

    public override EditReport Apply(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditRequest> requests)
    {
        if (requests.Count == 0) return new EditReport(0, 0);
        var memory = new FfnMemory(model);
        var layers = Scope.Layers;
        var zPoint = HookPoint.BlockOutput(model, layers[^1]);
        int steps = 0;
        double loss = 0;
        using var scope = NewDisposeScope();
        var zs = new List<Tensor>();
        foreach (var r in requests)
        {
            var (rewriting, kl) = Prompts(model, tokenizer, r);
            using var opt = TargetOptimizer.Optimize(model, [zPoint], rewriting, kl, Hp, PadId(tokenizer));
            zs.Add(opt.Vectors[0].Target.clone());
            steps += opt.Steps;
            loss += opt.FinalLoss;
        }
        var z = stack(zs);                                                                     // [n, d]
        var own = requests.Select(r => EditPrompts.Build(model, tokenizer, r.Prompt, r.Subject, null, Last)).ToList();
        for (int i = 0; i < layers.Count; i++)
        {
            using var layerScope = NewDisposeScope();
            int layer = layers[i];
            var keys = Keys(model, tokenizer, requests, InputPoint(memory, layer));                 // [n, d_in]
            var current = LookupActivations.AtLookup(model, own, zPoint, input: false, PadId(tokenizer));
            using var remaining = ((long)(layers.Count - i)).ToScalar();                           // held for the call (HeldScalars)
            var residual = (z - current).div(remaining);                                          // [n, d]
            UpdateLayer(model, tokenizer, own, memory, layer, keys, residual);
        }
        AfterBatch(model, tokenizer, requests, memory);
        return new EditReport(steps, loss / requests.Count);
    }

    /// <summary>compute_ks: per request, the mean over "{}" and the mean over the generated templates, averaged <c>[n, d_in]</c>.</summary>
    protected virtual Tensor Keys(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditRequest> requests, HookPoint point)
    {
        using var scope = NewDisposeScope();
        var templates = ContextTemplates;
        var prompts = requests.SelectMany(r => templates.Select(t => EditPrompts.Build(model, tokenizer, t.Replace("{}", r.Prompt, StringComparison.Ordinal), r.Subject, null, Last))).ToList();
        var all = LookupActivations.AtLookup(model, prompts, point, input: true, PadId(tokenizer))
            .reshape(requests.Count, templates.Count, -1);                                         // [n, T, d_in]
        var keys = templates.Count == 1 ? all[.., 0] : all[.., 0].Plus(all[.., 1..].mean([1])).div(HeldScalars.Two);
        return keys.MoveToOuterDisposeScope();
    }
}
