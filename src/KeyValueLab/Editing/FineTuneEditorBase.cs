using System.Text.Json.Nodes;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Editing;

/// <summary>The fields of a gradient editor's hyperparameters (FT, FT-BF) that say which matrices it trains.</summary>
public interface IFineTuneHyperparameters
{
    string Method { get; }
    int[] Layers { get; }
    /// <summary>keys, values or both.</summary>
    string Side { get; }
    /// <summary>Llama keys: gate, up or both (null = both).</summary>
    string? KeyKinds { get; }
}

/// <summary>
/// What the gradient editors (<see cref="FineTuneEditor"/>, <see cref="BreadthFirstFtEditor"/>) share: the matrices they train
/// (the record's side, layers and key kinds, unless a scope is given), params.json (the record with the scope actually edited)
/// and a <see cref="Prepare"/> that only checks the scope against the model.
/// </summary>
public abstract class FineTuneEditorBase<THp> : IKnowledgeEditor where THp : IFineTuneHyperparameters
{
    protected FineTuneEditorBase(THp hp, EditScope? scope)
    {
        Hp = hp;
        Scope = scope ?? new EditScope(EditScope.ParseSide(hp.Side), hp.Layers, EditScope.ParseKeyKinds(hp.KeyKinds));
    }

    protected THp Hp { get; }

    public string Method => Hp.Method;
    public EditScope Scope { get; }
    public bool JointBatch => true;

    public JsonObject Hyperparameters
    {
        get
        {
            // Set in place, so the fields keep the record's order.
            var json = HyperparameterFiles.ToJson(Hp);
            json["layers"] = new JsonArray([.. Scope.Layers.Select(l => JsonValue.Create(l))]);
            json["side"] = Scope.Side.ToString().ToLowerInvariant();
            if (Scope.KeyKinds is not null) json["key_kinds"] = string.Join("+", Scope.KeyKinds).ToLowerInvariant();
            return json;
        }
    }

    public IReadOnlyList<string> ParameterNames(CausalLM model) => Scope.MatrixNames(new FfnMemory(model));

    public IReadOnlyList<string> Prepare(CausalLM model, ITokenizer tokenizer)
    {
        Scope.MatrixNames(new FfnMemory(model));  // checks the layers and key kinds
        return [];
    }

    public abstract EditReport Apply(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditRequest> requests);
}
