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
                // Our GPT-2 holds its Conv1D weights as [out, in] already (transposed at load), as GGUF does.
                var layout = arch.LayoutOf(name) is var l && l == GgufLayout.Transposed ? GgufLayout.AsIs : l;
                int heads = layout == GgufLayout.RotaryInterleaved && name.EndsWith(".k_proj.weight", StringComparison.Ordinal) ? config.NumKvHeads : config.NumHeads;
                using var detached = p.detach();
                var value = GgufCheckpoint.FromHf(detached, layout, heads);
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
        switch (config.ModelType)
        {
            case "llama" or "mistral" or "qwen2" or "gemma" or "gemma2":
            {
                var options = config.ModelType switch
                {
                    "qwen2" => Qwen2.Options(raw, config.NumLayers),
                    "mistral" => Mistral.Options(raw, config.NumLayers),
                    "gemma" => Gemma.Options(raw),
                    "gemma2" => Gemma2.Options(raw, config.NumLayers),
                    _ => LlamaOptions.Read(raw),
                };
                bool gemma = config.ModelType is "gemma" or "gemma2";
                if (options.RopePositionScale != 1.0) throw new NotSupportedException("rope_scaling is not exported to GGUF here");
                if (options.QkvBias != (config.ModelType == "qwen2") || options.OutputBias || options.MlpBias)
                    throw new NotSupportedException("attention_bias / mlp_bias Llama models are not exported to GGUF here");
                if (gemma && !config.TieWordEmbeddings) throw new NotSupportedException($"an untied {config.ModelType} head: llama.cpp's {arch.Name} always uses the embedding");
                string actField = gemma ? "hidden_activation" : "hidden_act";
                string act = raw.OptString(actField) ?? (gemma ? "gelu_pytorch_tanh" : "silu");
                if (gemma ? act is not ("gelu_pytorch_tanh" or "gelu_new") : act != "silu")
                    throw new NotSupportedException($"{actField} \"{act}\": llama.cpp's {arch.Name} uses {(gemma ? "the tanh GELU" : "silu")}");
                if (config.ModelType == "gemma2") Gemma2Metadata(config, options, F, U);
                // llama.cpp's llama has no sliding window; its converter drops Mistral's (see docs/gguf.md).
                else if (config.ModelType != "mistral" && options.Windows.Count > 0) throw new NotSupportedException("sliding-window attention is not exported to GGUF here");
                U("attention.head_count_kv", config.NumKvHeads);
                U("rope.dimension_count", config.HeadDim);
                if (gemma || config.HeadDim != config.HiddenSize / config.NumHeads)
                {
                    U("attention.key_length", config.HeadDim);
                    U("attention.value_length", config.HeadDim);
                }
                F("rope.freq_base", options.RopeTheta);
                F("attention.layer_norm_rms_epsilon", options.RmsNormEps);
                break;
            }
            case "phi3":
            {
                var options = Phi3Options.Read(raw, config.HeadDim);
                if (raw.Raw["rope_scaling"] is System.Text.Json.Nodes.JsonObject) throw new NotSupportedException("phi3 rope_scaling is not exported to GGUF here");
                if (raw.OptString("hidden_act") is { } act && act != "silu") throw new NotSupportedException($"hidden_act \"{act}\": llama.cpp's phi3 uses silu");
                U("attention.head_count_kv", config.NumKvHeads);
                U("rope.dimension_count", options.RotaryDim);
                F("rope.freq_base", options.RopeTheta);
                F("attention.layer_norm_rms_epsilon", options.RmsNormEps);
                // Written as the converter does; llama.cpp ignores it ("Phi SWA is currently disabled").
                if (options.SlidingWindow is int window) U("attention.sliding_window", window);
                break;
            }
            case "gpt_neox":
            {
                var options = GptNeoxOptions.Read(raw, config.HeadDim);
                if (!options.AttentionBias) throw new NotSupportedException("attention_bias false: llama.cpp's gptneox needs the q/k/v and dense biases");
                U("rope.dimension_count", options.RotaryDim);
                F("rope.freq_base", options.RotaryBase);
                metadata.Add(new($"{arch.Name}.use_parallel_residual", GgufValue.OfBool(options.ParallelResidual)));
                F("attention.layer_norm_epsilon", options.LayerNormEps);
                break;
            }
            default:
            {
                var options = Gpt2Options.Read(raw);
                if (raw.OptString("activation_function") is { } act && act != "gelu_new") throw new NotSupportedException($"activation_function \"{act}\": llama.cpp's gpt2 uses gelu (tanh)");
                if (!options.ScaleAttnWeights || options.ScaleAttnByInverseLayerIdx) throw new NotSupportedException("GPT-2 attention scaling other than 1/sqrt(head_dim) is not exported");
                F("attention.layer_norm_epsilon", options.LayerNormEps);
                break;
            }
        }
        U("vocab_size", config.VocabSize);

        var vocab = GgufVocabulary.FromTokenizer(tokenizer);
        if (vocab.Tokens.Length < config.VocabSize) vocab = PadVocabulary(vocab, config.VocabSize);
        metadata.AddRange(vocab.ToMetadata());

        return metadata;
    }

    // llama.cpp's gemma2: softcaps always on, the window on even layers, queries scaled by 1/sqrt(head_dim)
    // (1/sqrt(hidden/heads) for the 27B model's 46 layers); query_pre_attn_scalar is not stored.
    private static void Gemma2Metadata(ModelConfig config, LlamaOptions options, Action<string, double> f, Action<string, int> u)
    {
        double expected = config.NumLayers == 46 ? (double)config.HiddenSize / config.NumHeads : config.HeadDim;
        if (options.ScoreScale is not double scale || Math.Abs(scale - 1.0 / Math.Sqrt(expected)) > 1e-12 / Math.Sqrt(expected))
            throw new NotSupportedException($"gemma2 query_pre_attn_scalar other than {expected}: llama.cpp derives the attention scale from the head size");
        if (options.AttentionSoftCap is not double attnCap) throw new NotSupportedException("gemma2 without attn_logit_softcapping: llama.cpp always applies it");
        if (config.Raw["final_logit_softcapping"] is null && config.Raw.ContainsKey("final_logit_softcapping"))
            throw new NotSupportedException("gemma2 without final_logit_softcapping: llama.cpp always applies it");
        var windows = options.LayerWindows;
        int? window = windows.Count > 0 ? windows[0] : null;
        if (window is not int w || Enumerable.Range(0, config.NumLayers).Any(i => options.WindowOf(i) != (i % 2 == 0 ? w : null)))
            throw new NotSupportedException("gemma2 layers other than sliding on even and global on odd layers: llama.cpp's gemma2 alternates them so");
        f("attn_logit_softcapping", attnCap);
        f("final_logit_softcapping", new ConfigReader(config.Raw, "config.json").Double("final_logit_softcapping", 30.0));
        u("attention.sliding_window", w);
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
