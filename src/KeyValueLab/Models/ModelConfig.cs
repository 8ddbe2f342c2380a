using System.Text.Json.Nodes;

namespace KeyValueLab.Models;

/// <summary>
/// Architecture-independent view of a model's <c>config.json</c>. Each architecture file parses its
/// own fields (GPT-2 <c>n_embd</c>, Llama <c>hidden_size</c>, …) into this record and keeps the
/// original JSON in <see cref="Raw"/> so a saved model writes back the same config.
/// </summary>
public sealed record ModelConfig
{
    public required string ModelType { get; init; }
    public required int VocabSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKvHeads { get; init; }
    public required int IntermediateSize { get; init; }
    public required int MaxPositions { get; init; }
    public required bool TieWordEmbeddings { get; init; }
    public int? BosTokenId { get; init; }
    public int? EosTokenId { get; init; }
    /// <summary>Per-head width; <c>HiddenSize / NumHeads</c> unless the config says otherwise (Llama <c>head_dim</c>).</summary>
    public int HeadDim { get => _headDim ?? HiddenSize / NumHeads; init => _headDim = value; }
    private readonly int? _headDim;
    public required JsonObject Raw { get; init; }
}
