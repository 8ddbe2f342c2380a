using System.Text.Json;
using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using static TorchSharp.torch;

namespace KeyValueLab.Memory;

/// <summary>One memory: its index, coefficient at the inspected token, and the tokens its value promotes.</summary>
public sealed record MemoryReading(int Index, double Coefficient, string KeyName, IReadOnlyList<string> PromotedTokens, IReadOnlyList<double> PromotedLogits);

/// <summary>The most active memories of one layer at a prompt's last token.</summary>
public sealed record MemoryReport(string ModelType, int Layer, int Position, string LastToken, IReadOnlyList<string> NextTokens, IReadOnlyList<MemoryReading> Memories)
{
    public string ToJson() => JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true });
}

/// <summary>
/// Reads FFN memories the way Geva et al. (2022) do: run the prompt, take the coefficients f(h·Kᵀ) of a
/// layer at the last token, rank memories by coefficient, and project each memory's value vector (a
/// column of <see cref="FfnMemory.Values"/>) through the output embedding to list the tokens it promotes.
/// As in that paper, the value vector is projected directly, without the final layer norm.
/// </summary>
public static class MemoryInspector
{
    public static MemoryReport Inspect(CausalLM model, ITokenizer tokenizer, string prompt, int layer, int topMemories = 10, int topTokens = 8)
    {
        var memory = new FfnMemory(model);
        int[] ids = PromptEncoding.Encode(model, tokenizer, prompt);
        if (ids.Length == 0) throw new ArgumentException("the prompt encodes to no tokens", nameof(prompt));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var input = tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0);       // [1, T]
        int last = ids.Length - 1;

        Tensor logits;
        Tensor coefficients;
        using (var recorder = memory.Record(layer))
        {
            logits = model.Forward(input)[0, last];                                 // [V]
            coefficients = recorder[layer][0, last].clone();                        // [memories]
        }
        var next = logits.topk(5).indexes.data<long>().Select(i => tokenizer.TokenText((int)i)).ToArray();

        var unembedding = model.OutputEmbedding;                                   // [V, d_model]
        var values = memory.Values(layer);                                          // [d_model, memories]
        var (topCoef, topIdx) = coefficients.topk(Math.Min(topMemories, (int)coefficients.shape[0]));
        string keyName = string.Join("+", model.Ffn(layer).Keys.Keys);
        var readings = new List<MemoryReading>();
        foreach (var (coef, index) in topCoef.data<float>().ToArray().Zip(topIdx.data<long>().ToArray()))
        {
            var promoted = unembedding.matmul(values[.., index]);                   // [V]
            var (pv, pi) = promoted.topk(Math.Min(topTokens, (int)promoted.shape[0]));
            readings.Add(new MemoryReading((int)index, coef, keyName,
                pi.data<long>().ToArray().Select(i => tokenizer.TokenText((int)i)).ToArray(),
                pv.data<float>().ToArray().Select(v => (double)v).ToArray()));
        }
        return new MemoryReport(model.Config.ModelType, layer, last, tokenizer.TokenText(ids[last]), next, readings);
    }
}
