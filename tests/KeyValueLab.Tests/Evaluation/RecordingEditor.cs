using System.Text.Json.Nodes;
using KeyValueLab.Editing;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Evaluation;

/// <summary>An editor that records each call's batch size and its history resets, around a real one.</summary>
internal sealed class RecordingEditor(IKnowledgeEditor inner) : IKnowledgeEditor, IEditHistory
{
    public List<int> Calls { get; } = [];
    public int Resets { get; private set; }
    public long HistoryCount => Calls.Sum();
    public void ResetHistory() { Resets++; Calls.Clear(); }
    public string Method => inner.Method;
    public EditScope Scope => inner.Scope;
    public JsonObject Hyperparameters => inner.Hyperparameters;
    public bool JointBatch => inner.JointBatch;
    public IReadOnlyList<string> ParameterNames(CausalLM model) => inner.ParameterNames(model);
    public IReadOnlyList<string> Prepare(CausalLM model, ITokenizer tokenizer) => inner.Prepare(model, tokenizer);
    public EditReport Apply(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditRequest> requests)
    {
        Calls.Add(requests.Count);
        return inner.Apply(model, tokenizer, requests);
    }
}
