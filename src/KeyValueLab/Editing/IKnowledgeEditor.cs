using System.Text.Json.Nodes;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Editing;

/// <summary>What one call of <see cref="IKnowledgeEditor.Apply"/> did.</summary>
/// <param name="Steps">Optimisation steps taken (FT: weight updates; ROME-style: target-vector steps, summed over requests).</param>
/// <param name="FinalLoss">The objective when the optimisation stopped (mean over requests for ROME-style editors).</param>
public sealed record EditReport(int Steps, double FinalLoss);

/// <summary>
/// A knowledge editor: changes a model's weights in place so that it states new facts. Every editor
/// chooses its side (keys, values or both) and layers (<see cref="Scope"/>); the caller keeps a
/// <see cref="Memory.WeightSnapshot"/> of <see cref="ParameterNames"/> to undo an edit.
/// </summary>
public interface IKnowledgeEditor
{
    /// <summary>FT, FT-L, ROME, KeyROME or MEMIT.</summary>
    string Method { get; }

    /// <summary>Side, layers and key matrices the editor changes.</summary>
    EditScope Scope { get; }

    /// <summary>The resolved hyperparameters (snake_case, as in the hparams files).</summary>
    JsonObject Hyperparameters { get; }

    /// <summary>True when one <see cref="Apply"/> call with many requests is a joint update (MEMIT, FT); false when requests are applied one after another (ROME, Key-ROME).</summary>
    bool JointBatch { get; }

    /// <summary>State-dict names of every parameter <see cref="Apply"/> may change.</summary>
    IReadOnlyList<string> ParameterNames(CausalLM model);

    /// <summary>
    /// Work done once per model before any edit and not counted in edit time: statistics, context templates.
    /// Must run on the unedited model. Returns lines for the log.
    /// </summary>
    IReadOnlyList<string> Prepare(CausalLM model, ITokenizer tokenizer);

    /// <summary>Edits <paramref name="model"/> in place so it states every request's new target.</summary>
    EditReport Apply(CausalLM model, ITokenizer tokenizer, IReadOnlyList<EditRequest> requests);
}
