using System.Globalization;
using System.Text.Json.Nodes;

namespace KeyValueLab.Organism;

/// <summary>Shape of an organism model; <see cref="ToConfigJson"/> writes the Hugging Face <c>config.json</c> the loader reads.</summary>
public sealed record OrganismModelConfig
{
    /// <summary>"llama" (RMSNorm, RoPE, SwiGLU: gate_proj/up_proj/down_proj) or "gpt2" (learned positions, c_fc/c_proj).</summary>
    public string Architecture { get; init; } = "llama";
    public int HiddenSize { get; init; } = 128;
    public int Layers { get; init; } = 4;
    public int Heads { get; init; } = 4;

    /// <summary>FFN width (number of key/value memories per layer); null = 3×hidden for Llama (SwiGLU), 4×hidden for GPT-2.</summary>
    public int? IntermediateSize { get; init; }
    public int MaxPositions { get; init; } = 128;

    public static readonly string[] Architectures = ["llama", "gpt2"];

    public int Inner => IntermediateSize ?? (Architecture == "gpt2" ? 4 : 3) * HiddenSize;

    public void Validate()
    {
        if (!Architectures.Contains(Architecture)) throw new ArgumentException($"architecture \"{Architecture}\" is not one of {string.Join(", ", Architectures)}");
        if (HiddenSize < 8 || Layers < 1 || Heads < 1 || HiddenSize % Heads != 0 || (HiddenSize / Heads) % 2 != 0)
            throw new ArgumentException("hidden size must be a positive multiple of heads with an even head size; layers and heads ≥ 1");
        if (Inner < 1 || MaxPositions < 16) throw new ArgumentException("intermediate size ≥ 1 and max positions ≥ 16 required");
    }

    /// <summary>The Hugging Face <c>config.json</c> for a vocabulary of <paramref name="vocabSize"/> with BOS/EOS ids.</summary>
    public JsonObject ToConfigJson(int vocabSize, int bosId, int eosId)
    {
        Validate();
        return Architecture == "llama"
            ? new JsonObject
            {
                ["architectures"] = new JsonArray("LlamaForCausalLM"),
                ["model_type"] = "llama",
                ["vocab_size"] = vocabSize,
                ["hidden_size"] = HiddenSize,
                ["intermediate_size"] = Inner,
                ["num_hidden_layers"] = Layers,
                ["num_attention_heads"] = Heads,
                ["num_key_value_heads"] = Heads,
                ["max_position_embeddings"] = MaxPositions,
                ["hidden_act"] = "silu",
                ["rms_norm_eps"] = 1e-5,
                ["rope_theta"] = 10000.0,
                ["initializer_range"] = 0.02,
                ["tie_word_embeddings"] = true,
                ["bos_token_id"] = bosId,
                ["eos_token_id"] = eosId,
                ["torch_dtype"] = "float32",
            }
            : new JsonObject
            {
                ["architectures"] = new JsonArray("GPT2LMHeadModel"),
                ["model_type"] = "gpt2",
                ["vocab_size"] = vocabSize,
                ["n_embd"] = HiddenSize,
                ["n_inner"] = Inner,
                ["n_layer"] = Layers,
                ["n_head"] = Heads,
                ["n_positions"] = MaxPositions,
                ["n_ctx"] = MaxPositions,
                ["activation_function"] = "gelu_new",
                ["layer_norm_epsilon"] = 1e-5,
                ["initializer_range"] = 0.02,
                ["tie_word_embeddings"] = true,
                ["bos_token_id"] = bosId,
                ["eos_token_id"] = eosId,
                ["torch_dtype"] = "float32",
            };
    }

    /// <summary>A stable one-line description, part of the cache key.</summary>
    public string Key() => string.Create(CultureInfo.InvariantCulture, $"{Architecture} d{HiddenSize} L{Layers} H{Heads} ff{Inner} pos{MaxPositions}");
}
