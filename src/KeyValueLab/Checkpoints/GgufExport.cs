using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Checkpoints;

/// <summary>
/// Writes a model and its tokenizer as a GGUF file llama.cpp runs: the <c>{arch}.*</c> hyperparameters and
/// <c>tokenizer.ggml.*</c> vocabulary llama.cpp reads, tensors under llama.cpp's names, Llama q/k rows permuted as
/// llama.cpp's converter does. As in that converter, a F16 export keeps 1-D tensors (norms, biases) in F32.
/// </summary>
public static class GgufExport
{
    /// <summary>The architectures that can be exported.</summary>
    public static IReadOnlyList<string> Supported => GgufArchitecture.All.Select(a => a.ModelType).ToArray();

    /// <exception cref="NotSupportedException">An architecture, setting or tokenizer llama.cpp's format cannot express here (named).</exception>
    /// <exception cref="IOException">The output exists and <paramref name="overwrite"/> is false, or writing failed.</exception>
    public static void Write(CausalLM model, ITokenizer tokenizer, string path, GgmlType type = GgmlType.F32, bool overwrite = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        var config = model.Config;
        var metadata = Metadata(config, tokenizer, type);
        var arch = GgufArchitecture.ForModelType(config.ModelType)!;

        var tensors = new List<GgufTensorToWrite>();
        try
        {
            foreach (var (name, p) in model.named_parameters())
            {
                string gguf = arch.ToGguf(name) ?? throw new NotSupportedException($"parameter {name} has no GGUF name for {arch.Name}");
                var value = p.detach();
                int heads = name.EndsWith(".self_attn.q_proj.weight", StringComparison.Ordinal) ? config.NumHeads
                    : name.EndsWith(".self_attn.k_proj.weight", StringComparison.Ordinal) ? config.NumKvHeads : 0;
                if (arch.PermutesQk && heads > 0)
                {
                    var permuted = GgufCheckpoint.Permute(value, heads);
                    value.Dispose();
                    value = permuted;
                }
                tensors.Add(new GgufTensorToWrite(gguf, value, value.dim() == 1 ? GgmlType.F32 : type));
            }
            GgufWriter.Write(path, metadata, tensors, overwrite);
        }
        finally
        {
            foreach (var t in tensors) t.Value.Dispose();
        }
    }

    /// <summary>The metadata <see cref="Write"/> writes: general.*, the architecture's hyperparameters, the vocabulary.</summary>
    /// <exception cref="NotSupportedException">As <see cref="Write"/>.</exception>
    public static IReadOnlyList<KeyValuePair<string, GgufValue>> Metadata(ModelConfig config, ITokenizer tokenizer, GgmlType type = GgmlType.F32)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (type is not (GgmlType.F32 or GgmlType.F16)) throw new NotSupportedException($"GGUF export type {type} (supported: F32, F16)");
        var arch = GgufArchitecture.ForModelType(config.ModelType)
            ?? throw new NotSupportedException($"model_type \"{config.ModelType}\" cannot be exported to GGUF (supported: {string.Join(", ", Supported)})");
        if (tokenizer.VocabSize > config.VocabSize)
            throw new NotSupportedException($"the tokenizer has {tokenizer.VocabSize} tokens but the model only {config.VocabSize}");

        var raw = new ConfigReader(config.Raw, "config.json");
        var metadata = new List<KeyValuePair<string, GgufValue>>
        {
            new("general.architecture", GgufValue.Of(arch.Name)),
            new("general.name", GgufValue.Of(config.Raw["_name_or_path"]?.ToString() is { Length: > 0 } n ? n : "kvlab export")),
            new("general.file_type", GgufValue.OfUInt32(type == GgmlType.F16 ? 1u : 0u)),
        };
        void U(string key, int v) => metadata.Add(new($"{arch.Name}.{key}", GgufValue.OfUInt32((uint)v)));
        void F(string key, double v) => metadata.Add(new($"{arch.Name}.{key}", GgufValue.OfFloat32((float)v)));

        U("context_length", config.MaxPositions);
        U("embedding_length", config.HiddenSize);
        U("block_count", config.NumLayers);
        U("feed_forward_length", config.IntermediateSize);
        U("attention.head_count", config.NumHeads);
        if (arch.IsLlamaFamily)
        {
            var options = arch == GgufArchitecture.Qwen2 ? Qwen2.Options(raw, config.NumLayers) : LlamaOptions.Read(raw);
            if (options.RopePositionScale != 1.0) throw new NotSupportedException("rope_scaling is not exported to GGUF here");
            if (options.QkvBias != (arch == GgufArchitecture.Qwen2) || options.OutputBias || options.MlpBias)
                throw new NotSupportedException("attention_bias / mlp_bias Llama models are not exported to GGUF here");
            if (options.Windows.Count > 0) throw new NotSupportedException("sliding-window attention is not exported to GGUF here");
            if (raw.OptString("hidden_act") is { } act && act != "silu") throw new NotSupportedException($"hidden_act \"{act}\": llama.cpp's llama uses silu");
            U("attention.head_count_kv", config.NumKvHeads);
            U("rope.dimension_count", config.HeadDim);
            if (config.HeadDim != config.HiddenSize / config.NumHeads)
            {
                U("attention.key_length", config.HeadDim);
                U("attention.value_length", config.HeadDim);
            }
            F("rope.freq_base", options.RopeTheta);
            F("attention.layer_norm_rms_epsilon", options.RmsNormEps);
        }
        else
        {
            var options = Gpt2Options.Read(raw);
            if (raw.OptString("activation_function") is { } act && act != "gelu_new") throw new NotSupportedException($"activation_function \"{act}\": llama.cpp's gpt2 uses gelu (tanh)");
            if (!options.ScaleAttnWeights || options.ScaleAttnByInverseLayerIdx) throw new NotSupportedException("GPT-2 attention scaling other than 1/sqrt(head_dim) is not exported");
            F("attention.layer_norm_epsilon", options.LayerNormEps);
        }
        U("vocab_size", config.VocabSize);

        var vocab = GgufVocabulary.FromTokenizer(tokenizer);
        if (vocab.Tokens.Length < config.VocabSize) vocab = PadVocabulary(vocab, config.VocabSize);
        metadata.AddRange(vocab.ToMetadata());

        return metadata;
    }

    // llama.cpp needs one vocabulary entry per embedding row; rows the tokenizer does not use become unused tokens.
    private static GgufVocabulary PadVocabulary(GgufVocabulary v, int size)
    {
        int n = v.Tokens.Length;
        return v with
        {
            Tokens = [.. v.Tokens, .. Enumerable.Range(n, size - n).Select(i => $"[PAD{i}]")],
            Scores = v.Scores is null ? null : [.. v.Scores, .. Enumerable.Repeat(0f, size - n)],
            Types = [.. v.Types, .. Enumerable.Repeat(5, size - n)],
        };
    }
}
