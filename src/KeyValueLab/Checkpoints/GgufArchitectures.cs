using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace KeyValueLab.Checkpoints;

/// <summary>
/// How one architecture's Hugging Face checkpoint maps onto llama.cpp's GGUF: tensor names (llama.cpp
/// gguf-py <c>tensor_mapping.py</c> / <c>constants.py</c>), metadata keys ↔ <c>config.json</c> fields, and which
/// tensors llama.cpp's converter stores differently (GPT-2 Conv1D weights are stored <c>[out, in]</c>; Llama q/k
/// rows permuted from rotate-half to interleaved pairs, see <see cref="GgufCheckpoint"/>).
/// </summary>
internal sealed record GgufArchitecture(
    string Name,
    string ModelType,
    IReadOnlyList<(string Hf, string Gguf)> Global,
    IReadOnlyList<(string Hf, string Gguf)> PerLayer,
    IReadOnlyList<(string ConfigKey, string MetadataSuffix, GgufType Type, bool Required)> Fields,
    IReadOnlySet<string> HfStoredTransposed)
{
    public const string LayerCountSuffix = "block_count";

    public static readonly GgufArchitecture Llama = new(
        "llama", "llama",
        [("model.embed_tokens.weight", "token_embd.weight"), ("model.norm.weight", "output_norm.weight"), ("lm_head.weight", "output.weight")],
        [
            ("input_layernorm.weight", "attn_norm.weight"),
            ("self_attn.q_proj.weight", "attn_q.weight"),
            ("self_attn.k_proj.weight", "attn_k.weight"),
            ("self_attn.v_proj.weight", "attn_v.weight"),
            ("self_attn.o_proj.weight", "attn_output.weight"),
            ("post_attention_layernorm.weight", "ffn_norm.weight"),
            ("mlp.gate_proj.weight", "ffn_gate.weight"),
            ("mlp.up_proj.weight", "ffn_up.weight"),
            ("mlp.down_proj.weight", "ffn_down.weight"),
        ],
        [
            ("hidden_size", "embedding_length", GgufType.UInt32, true),
            ("intermediate_size", "feed_forward_length", GgufType.UInt32, true),
            ("num_hidden_layers", LayerCountSuffix, GgufType.UInt32, true),
            ("num_attention_heads", "attention.head_count", GgufType.UInt32, true),
            ("num_key_value_heads", "attention.head_count_kv", GgufType.UInt32, false),
            ("max_position_embeddings", "context_length", GgufType.UInt32, false),
            ("rms_norm_eps", "attention.layer_norm_rms_epsilon", GgufType.Float32, true),
            ("rope_theta", "rope.freq_base", GgufType.Float32, false),
        ],
        new HashSet<string>());

    /// <summary>Qwen2: Llama's names plus q/k/v biases; llama.cpp rotates halves (NEOX rope) here, so no permutation.</summary>
    public static readonly GgufArchitecture Qwen2 = Llama with
    {
        Name = "qwen2",
        ModelType = "qwen2",
        PerLayer = [.. Llama.PerLayer, ("self_attn.q_proj.bias", "attn_q.bias"), ("self_attn.k_proj.bias", "attn_k.bias"), ("self_attn.v_proj.bias", "attn_v.bias")],
    };

    /// <summary>True for the architectures built on <see cref="Models.Llama"/>'s body (RMSNorm, rotary, SwiGLU).</summary>
    public bool IsLlamaFamily => this == Llama || this == Qwen2;

    /// <summary>True when llama.cpp's converter interleaves q/k rows for this architecture (its NORM rope type).</summary>
    public bool PermutesQk => this == Llama;

    public static readonly GgufArchitecture Gpt2 = new(
        "gpt2", "gpt2",
        [
            ("transformer.wte.weight", "token_embd.weight"), ("transformer.wpe.weight", "position_embd.weight"),
            ("transformer.ln_f.weight", "output_norm.weight"), ("transformer.ln_f.bias", "output_norm.bias"), ("lm_head.weight", "output.weight"),
        ],
        [
            ("ln_1.weight", "attn_norm.weight"), ("ln_1.bias", "attn_norm.bias"),
            ("attn.c_attn.weight", "attn_qkv.weight"), ("attn.c_attn.bias", "attn_qkv.bias"),
            ("attn.c_proj.weight", "attn_output.weight"), ("attn.c_proj.bias", "attn_output.bias"),
            ("ln_2.weight", "ffn_norm.weight"), ("ln_2.bias", "ffn_norm.bias"),
            ("mlp.c_fc.weight", "ffn_up.weight"), ("mlp.c_fc.bias", "ffn_up.bias"),
            ("mlp.c_proj.weight", "ffn_down.weight"), ("mlp.c_proj.bias", "ffn_down.bias"),
        ],
        [
            ("n_embd", "embedding_length", GgufType.UInt32, true),
            ("n_inner", "feed_forward_length", GgufType.UInt32, false),
            ("n_layer", LayerCountSuffix, GgufType.UInt32, true),
            ("n_head", "attention.head_count", GgufType.UInt32, true),
            ("n_positions", "context_length", GgufType.UInt32, true),
            ("layer_norm_epsilon", "attention.layer_norm_epsilon", GgufType.Float32, true),
        ],
        new HashSet<string>(StringComparer.Ordinal) { "attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight" });

    public static IReadOnlyList<GgufArchitecture> All { get; } = [Llama, Qwen2, Gpt2];

    public static GgufArchitecture? ForGguf(string name) => All.FirstOrDefault(a => a.Name == name);

    public static GgufArchitecture? ForModelType(string modelType) => All.FirstOrDefault(a => a.ModelType == modelType);

    private static readonly Regex LayerName = new(@"^(?:model\.layers|transformer\.h)\.(\d+)\.(.+)$", RegexOptions.CultureInvariant);
    private static readonly Regex BlockName = new(@"^blk\.(\d+)\.(.+)$", RegexOptions.CultureInvariant);

    private string LayerPrefix => ModelType == "gpt2" ? "transformer.h" : "model.layers";

    /// <summary>The GGUF name of a Hugging Face parameter, or null when this architecture has none for it.</summary>
    public string? ToGguf(string hf)
    {
        foreach (var (h, g) in Global) if (h == hf) return g;
        var m = LayerName.Match(hf);
        if (!m.Success) return null;
        foreach (var (h, g) in PerLayer) if (h == m.Groups[2].Value) return $"blk.{m.Groups[1].Value}.{g}";
        return null;
    }

    /// <summary>The Hugging Face name of a GGUF tensor, or null when it is not one this architecture knows.</summary>
    public string? ToHf(string gguf)
    {
        foreach (var (h, g) in Global) if (g == gguf) return h;
        var m = BlockName.Match(gguf);
        if (!m.Success) return null;
        foreach (var (h, g) in PerLayer) if (g == m.Groups[2].Value) return $"{LayerPrefix}.{m.Groups[1].Value}.{h}";
        return null;
    }

    /// <summary>True for a Hugging Face parameter that the checkpoint stores transposed (GPT-2 Conv1D) but GGUF does not.</summary>
    public bool IsHfTransposed(string hf)
    {
        var m = LayerName.Match(hf);
        return m.Success && HfStoredTransposed.Contains(m.Groups[2].Value);
    }
}
