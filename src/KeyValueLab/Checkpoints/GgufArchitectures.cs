using System.Text.RegularExpressions;

namespace KeyValueLab.Checkpoints;

/// <summary>How llama.cpp's converter (convert_hf_to_gguf.py) stores a Hugging Face tensor in GGUF.</summary>
internal enum GgufLayout
{
    /// <summary>Unchanged.</summary>
    AsIs,

    /// <summary>q/k rows of each head reordered from rotate-half pairs to interleaved ones (<c>LlamaModel.permute</c>; ggml's NORM rope).</summary>
    RotaryInterleaved,

    /// <summary>GPT-2 Conv1D: <c>[in, out]</c> in the checkpoint, <c>[out, in]</c> in GGUF.</summary>
    Transposed,

    /// <summary>Gemma RMSNorm weights: the checkpoint holds w (the model scales by 1 + w), GGUF holds 1 + w.</summary>
    PlusOne,

    /// <summary>GPT-NeoX <c>query_key_value</c>: rows [head][q, k, v] in the checkpoint, [q | k | v][head] in GGUF.</summary>
    QkvByHead,
}

/// <summary>
/// How one architecture's Hugging Face checkpoint maps onto llama.cpp's GGUF: tensor names (llama.cpp
/// gguf-py <c>tensor_mapping.py</c> / <c>constants.py</c>, src/llama-arch.cpp), metadata keys ↔ <c>config.json</c>
/// fields, and the tensors llama.cpp's converter stores in another layout (<see cref="GgufLayout"/>). Fields
/// derived from several values (rotary fractions, Gemma 2's attention scale) are handled by the reader and writer.
/// </summary>
internal sealed record GgufArchitecture(
    string Name,
    string ModelType,
    string HfClass,
    string LayerPrefix,
    IReadOnlyList<(string Hf, string Gguf)> Global,
    IReadOnlyList<(string Hf, string Gguf)> PerLayer,
    IReadOnlyList<(string ConfigKey, string MetadataSuffix, GgufType Type, bool Required)> Fields,
    IReadOnlyDictionary<string, GgufLayout> Layouts)
{
    public const string LayerCountSuffix = "block_count";

    private static readonly (string, string, GgufType, bool)[] LlamaFields =
    [
        ("hidden_size", "embedding_length", GgufType.UInt32, true),
        ("intermediate_size", "feed_forward_length", GgufType.UInt32, true),
        ("num_hidden_layers", LayerCountSuffix, GgufType.UInt32, true),
        ("num_attention_heads", "attention.head_count", GgufType.UInt32, true),
        ("num_key_value_heads", "attention.head_count_kv", GgufType.UInt32, false),
        ("max_position_embeddings", "context_length", GgufType.UInt32, false),
        ("rms_norm_eps", "attention.layer_norm_rms_epsilon", GgufType.Float32, true),
        ("rope_theta", "rope.freq_base", GgufType.Float32, false),
    ];

    private static readonly (string, string)[] LlamaGlobal =
        [("model.embed_tokens.weight", "token_embd.weight"), ("model.norm.weight", "output_norm.weight"), ("lm_head.weight", "output.weight")];

    private static readonly (string, string)[] LlamaAttention =
    [
        ("self_attn.q_proj.weight", "attn_q.weight"),
        ("self_attn.k_proj.weight", "attn_k.weight"),
        ("self_attn.v_proj.weight", "attn_v.weight"),
        ("self_attn.o_proj.weight", "attn_output.weight"),
    ];

    private static readonly (string, string)[] LlamaMlp =
        [("mlp.gate_proj.weight", "ffn_gate.weight"), ("mlp.up_proj.weight", "ffn_up.weight"), ("mlp.down_proj.weight", "ffn_down.weight")];

    public static readonly GgufArchitecture Llama = new(
        "llama", "llama", "LlamaForCausalLM", "model.layers", LlamaGlobal,
        [("input_layernorm.weight", "attn_norm.weight"), .. LlamaAttention, ("post_attention_layernorm.weight", "ffn_norm.weight"), .. LlamaMlp],
        LlamaFields,
        new Dictionary<string, GgufLayout> { ["self_attn.q_proj.weight"] = GgufLayout.RotaryInterleaved, ["self_attn.k_proj.weight"] = GgufLayout.RotaryInterleaved });

    /// <summary>Mistral: llama.cpp's converter writes MistralForCausalLM as <c>llama</c> (and drops <c>sliding_window</c>).</summary>
    public static readonly GgufArchitecture Mistral = Llama with { ModelType = "mistral", HfClass = "MistralForCausalLM" };

    /// <summary>Qwen2: Llama's names plus q/k/v biases; llama.cpp rotates halves (NEOX rope) here, so no permutation.</summary>
    public static readonly GgufArchitecture Qwen2 = Llama with
    {
        Name = "qwen2",
        ModelType = "qwen2",
        HfClass = "Qwen2ForCausalLM",
        PerLayer = [.. Llama.PerLayer, ("self_attn.q_proj.bias", "attn_q.bias"), ("self_attn.k_proj.bias", "attn_k.bias"), ("self_attn.v_proj.bias", "attn_v.bias")],
        Layouts = new Dictionary<string, GgufLayout>(),
    };

    /// <summary>Gemma: Llama's names, tied head (no <c>output.weight</c>), norms stored as 1 + w, NEOX rope.</summary>
    public static readonly GgufArchitecture Gemma = Llama with
    {
        Name = "gemma",
        ModelType = "gemma",
        HfClass = "GemmaForCausalLM",
        Global = LlamaGlobal[..2],
        Fields = [.. LlamaFields, ("head_dim", "attention.key_length", GgufType.UInt32, false)],
        Layouts = new Dictionary<string, GgufLayout>
        {
            ["model.norm.weight"] = GgufLayout.PlusOne, ["input_layernorm.weight"] = GgufLayout.PlusOne, ["post_attention_layernorm.weight"] = GgufLayout.PlusOne,
        },
    };

    /// <summary>Gemma 2: Gemma plus the post-attention, pre- and post-feed-forward norms (all 1 + w), soft-caps and the window.</summary>
    public static readonly GgufArchitecture Gemma2 = Gemma with
    {
        Name = "gemma2",
        ModelType = "gemma2",
        HfClass = "Gemma2ForCausalLM",
        PerLayer =
        [
            ("input_layernorm.weight", "attn_norm.weight"), .. LlamaAttention, ("post_attention_layernorm.weight", "post_attention_norm.weight"),
            ("pre_feedforward_layernorm.weight", "ffn_norm.weight"), .. LlamaMlp, ("post_feedforward_layernorm.weight", "post_ffw_norm.weight"),
        ],
        Fields =
        [
            .. Gemma.Fields,
            ("attn_logit_softcapping", "attn_logit_softcapping", GgufType.Float32, false),
            ("final_logit_softcapping", "final_logit_softcapping", GgufType.Float32, false),
            ("sliding_window", "attention.sliding_window", GgufType.UInt32, true),
        ],
        Layouts = new Dictionary<string, GgufLayout>
        {
            ["model.norm.weight"] = GgufLayout.PlusOne, ["input_layernorm.weight"] = GgufLayout.PlusOne, ["post_attention_layernorm.weight"] = GgufLayout.PlusOne,
            ["pre_feedforward_layernorm.weight"] = GgufLayout.PlusOne, ["post_feedforward_layernorm.weight"] = GgufLayout.PlusOne,
        },
    };

    /// <summary>Phi-3: fused <c>qkv_proj</c> as <c>attn_qkv</c> and fused <c>gate_up_proj</c> as <c>ffn_up</c> (rows [gate | up], as ggml's swiglu splits it).</summary>
    public static readonly GgufArchitecture Phi3 = new(
        "phi3", "phi3", "Phi3ForCausalLM", "model.layers", LlamaGlobal,
        [
            ("input_layernorm.weight", "attn_norm.weight"),
            ("self_attn.qkv_proj.weight", "attn_qkv.weight"),
            ("self_attn.o_proj.weight", "attn_output.weight"),
            ("post_attention_layernorm.weight", "ffn_norm.weight"),
            ("mlp.gate_up_proj.weight", "ffn_up.weight"),
            ("mlp.down_proj.weight", "ffn_down.weight"),
        ],
        [.. LlamaFields, ("sliding_window", "attention.sliding_window", GgufType.UInt32, false)],
        new Dictionary<string, GgufLayout>());

    /// <summary>GPT-NeoX (Pythia): LayerNorms and linears with biases, <c>query_key_value</c> regrouped as [q | k | v].</summary>
    public static readonly GgufArchitecture GptNeox = new(
        "gptneox", "gpt_neox", "GPTNeoXForCausalLM", "gpt_neox.layers",
        [
            ("gpt_neox.embed_in.weight", "token_embd.weight"), ("gpt_neox.final_layer_norm.weight", "output_norm.weight"),
            ("gpt_neox.final_layer_norm.bias", "output_norm.bias"), ("embed_out.weight", "output.weight"),
        ],
        [
            ("input_layernorm.weight", "attn_norm.weight"), ("input_layernorm.bias", "attn_norm.bias"),
            ("attention.query_key_value.weight", "attn_qkv.weight"), ("attention.query_key_value.bias", "attn_qkv.bias"),
            ("attention.dense.weight", "attn_output.weight"), ("attention.dense.bias", "attn_output.bias"),
            ("post_attention_layernorm.weight", "ffn_norm.weight"), ("post_attention_layernorm.bias", "ffn_norm.bias"),
            ("mlp.dense_h_to_4h.weight", "ffn_up.weight"), ("mlp.dense_h_to_4h.bias", "ffn_up.bias"),
            ("mlp.dense_4h_to_h.weight", "ffn_down.weight"), ("mlp.dense_4h_to_h.bias", "ffn_down.bias"),
        ],
        [
            ("hidden_size", "embedding_length", GgufType.UInt32, true),
            ("intermediate_size", "feed_forward_length", GgufType.UInt32, true),
            ("num_hidden_layers", LayerCountSuffix, GgufType.UInt32, true),
            ("num_attention_heads", "attention.head_count", GgufType.UInt32, true),
            ("max_position_embeddings", "context_length", GgufType.UInt32, false),
            ("layer_norm_eps", "attention.layer_norm_epsilon", GgufType.Float32, true),
            ("rotary_emb_base", "rope.freq_base", GgufType.Float32, false),
            ("use_parallel_residual", "use_parallel_residual", GgufType.Bool, false),
        ],
        new Dictionary<string, GgufLayout> { ["attention.query_key_value.weight"] = GgufLayout.QkvByHead, ["attention.query_key_value.bias"] = GgufLayout.QkvByHead });

    public static readonly GgufArchitecture Gpt2 = new(
        "gpt2", "gpt2", "GPT2LMHeadModel", "transformer.h",
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
        new Dictionary<string, GgufLayout>
        {
            ["attn.c_attn.weight"] = GgufLayout.Transposed, ["attn.c_proj.weight"] = GgufLayout.Transposed,
            ["mlp.c_fc.weight"] = GgufLayout.Transposed, ["mlp.c_proj.weight"] = GgufLayout.Transposed,
        });

    /// <summary>Every architecture with a GGUF map; the first of each GGUF name is the one a GGUF file loads as.</summary>
    public static IReadOnlyList<GgufArchitecture> All { get; } = [Llama, Mistral, Qwen2, Gemma, Gemma2, Phi3, GptNeox, Gpt2];

    public static GgufArchitecture? ForGguf(string name) => All.FirstOrDefault(a => a.Name == name);

    public static GgufArchitecture? ForModelType(string modelType) => All.FirstOrDefault(a => a.ModelType == modelType);

    /// <summary>True for the architectures built on <see cref="Models.Llama"/>'s body (RMSNorm, rotary, gated MLP).</summary>
    public bool IsLlamaFamily => ModelType is "llama" or "mistral" or "qwen2" or "gemma" or "gemma2";

    private static readonly Regex LayerName = new(@"^(?:model\.layers|transformer\.h|gpt_neox\.layers)\.(\d+)\.(.+)$", RegexOptions.CultureInvariant);
    private static readonly Regex BlockName = new(@"^blk\.(\d+)\.(.+)$", RegexOptions.CultureInvariant);

    /// <summary>The GGUF name of a Hugging Face parameter, or null when this architecture has none for it.</summary>
    public string? ToGguf(string hf)
    {
        foreach (var (h, g) in Global) if (h == hf) return g;
        var m = LayerName.Match(hf);
        if (!m.Success || !hf.StartsWith(LayerPrefix + ".", StringComparison.Ordinal)) return null;
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

    /// <summary>How llama.cpp's converter stores the Hugging Face parameter <paramref name="hf"/>.</summary>
    public GgufLayout LayoutOf(string hf)
    {
        if (Layouts.TryGetValue(hf, out var global)) return global;
        var m = LayerName.Match(hf);
        return m.Success && Layouts.TryGetValue(m.Groups[2].Value, out var layout) ? layout : GgufLayout.AsIs;
    }
}
