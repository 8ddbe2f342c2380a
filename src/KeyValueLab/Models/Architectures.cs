using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace KeyValueLab.Models;

/// <summary>
/// Everything the rest of the code base needs to know about one Hugging Face <c>model_type</c>, in one place:
/// how to parse its config and build it, and the names editors, LoRA and prompt encoding use.
/// </summary>
/// <remarks>
/// LoRA names are PEFT <c>target_modules</c> suffixes. <see cref="KeyModules"/> and <see cref="ValueModule"/> are the
/// FFN keys and values (what the LoRA shortcuts <c>keys</c>, <c>keys:gate</c>, <c>keys:up</c> and <c>values</c> select);
/// <see cref="AttentionModules"/> maps q, k, v, o to their projections, and <see cref="FusedAttention"/> names
/// the one module that holds q, k and v where they are fused (GPT-2, Phi-3, GPT-NeoX).
/// </remarks>
public sealed record Architecture
{
    public required string ModelType { get; init; }
    public required Func<JsonObject, string, ModelConfig> Parse { get; init; }
    public required Func<ModelConfig, Device?, CausalLM> Build { get; init; }

    /// <summary>Whether prompts start with BOS, as the architecture's tokenizer does by default (SentencePiece: Llama, Mistral, Gemma).</summary>
    public required bool PromptBos { get; init; }

    /// <summary>FFN key modules by kind: <c>"fc"</c> alone, or <c>"gate"</c> and <c>"up"</c>.</summary>
    public required IReadOnlyDictionary<string, string> KeyModules { get; init; }

    public required string ValueModule { get; init; }

    /// <summary>q, k, v, o → module-name suffix; where q, k and v are fused only o is listed.</summary>
    public required IReadOnlyDictionary<string, string> AttentionModules { get; init; }

    /// <summary>The fused q/k/v module, or null when they are separate.</summary>
    public string? FusedAttention { get; init; }

    /// <summary>True for GPT-2, whose Conv1D weights the checkpoint stores <c>[in, out]</c> (PEFT <c>fan_in_fan_out</c>).</summary>
    public bool FanInFanOut { get; init; }

    /// <summary>
    /// The model family whose shipped hyperparameters (<c>hparams/{METHOD}/{family}.json</c>) an editor uses where this
    /// <c>model_type</c> has no file of its own; null = none. Llama's (Llama-3-8B's AlphaEdit and LocFT-BF values) serve the
    /// Llama-family models (Qwen2, Mistral, Gemma, Gemma 2, Phi-3).
    /// </summary>
    public string? HyperparameterFallback { get; init; }
}

/// <summary>The supported Hugging Face <c>model_type</c>s: config parsing and model construction by name.</summary>
public static class Architectures
{
    private static readonly Dictionary<string, string> GatedKeys = new() { ["gate"] = "gate_proj", ["up"] = "up_proj" };
    private static readonly Dictionary<string, string> LlamaAttention = new() { ["q"] = "q_proj", ["k"] = "k_proj", ["v"] = "v_proj", ["o"] = "o_proj" };

    private static Architecture LlamaLike(string type, Func<JsonObject, string, ModelConfig> parse, Func<ModelConfig, Device?, CausalLM> build, bool bos,
        string? hyperparameterFallback = null) => new()
    {
        ModelType = type, Parse = parse, Build = build, PromptBos = bos,
        KeyModules = GatedKeys, ValueModule = "down_proj", AttentionModules = LlamaAttention, HyperparameterFallback = hyperparameterFallback,
    };

    /// <summary>Every supported architecture, in the order they were added.</summary>
    public static IReadOnlyList<Architecture> All { get; } =
    [
        new()
        {
            ModelType = Gpt2.ModelType, Parse = Gpt2.ParseConfig, Build = (c, d) => new Gpt2(c, d), PromptBos = false,
            KeyModules = new Dictionary<string, string> { ["fc"] = "mlp.c_fc" }, ValueModule = "mlp.c_proj",
            AttentionModules = new Dictionary<string, string>(), FusedAttention = "attn.c_attn", FanInFanOut = true,
        },
        new()
        {
            ModelType = Gptj.ModelType, Parse = Gptj.ParseConfig, Build = (c, d) => new Gptj(c, d), PromptBos = false,
            KeyModules = new Dictionary<string, string> { ["fc"] = "mlp.fc_in" }, ValueModule = "mlp.fc_out",
            AttentionModules = new Dictionary<string, string> { ["q"] = "q_proj", ["k"] = "k_proj", ["v"] = "v_proj", ["o"] = "out_proj" },
        },
        LlamaLike(Llama.ModelType, Llama.ParseConfig, (c, d) => new Llama(c, d), bos: true),
        // Qwen2's tokenizer has no BOS token (Hugging Face adds none).
        LlamaLike(Qwen2.ModelType, Qwen2.ParseConfig, Qwen2.Build, bos: false, hyperparameterFallback: Llama.ModelType),
        LlamaLike(Mistral.ModelType, Mistral.ParseConfig, Mistral.Build, bos: true, hyperparameterFallback: Llama.ModelType),
        LlamaLike(Gemma.ModelType, Gemma.ParseConfig, Gemma.Build, bos: true, hyperparameterFallback: Llama.ModelType),
        new()
        {
            ModelType = GptNeox.ModelType, Parse = GptNeox.ParseConfig, Build = (c, d) => new GptNeox(c, d), PromptBos = false,
            KeyModules = new Dictionary<string, string> { ["fc"] = "mlp.dense_h_to_4h" }, ValueModule = "mlp.dense_4h_to_h",
            AttentionModules = new Dictionary<string, string> { ["o"] = "attention.dense" }, FusedAttention = "attention.query_key_value",
        },
        // Phi-3's tokenizer_config has add_bos_token false. Its gate and up are the parts of the fused gate_up_proj.
        new()
        {
            ModelType = Phi3.ModelType, Parse = Phi3.ParseConfig, Build = (c, d) => new Phi3(c, d), PromptBos = false,
            KeyModules = new Dictionary<string, string> { ["gate"] = "gate_up_proj.gate", ["up"] = "gate_up_proj.up" }, ValueModule = "down_proj",
            AttentionModules = new Dictionary<string, string> { ["o"] = "o_proj" }, FusedAttention = "qkv_proj",
            HyperparameterFallback = Llama.ModelType,
        },
        LlamaLike(Gemma2.ModelType, Gemma2.ParseConfig, (c, d) => new Gemma2(c, d), bos: true, hyperparameterFallback: Llama.ModelType),
    ];

    private static readonly Dictionary<string, Architecture> Known = All.ToDictionary(a => a.ModelType, StringComparer.Ordinal);

    /// <summary>The model types this build can run.</summary>
    public static IReadOnlyList<string> Supported { get; } = [.. All.Select(a => a.ModelType)];

    /// <summary>The description of <paramref name="modelType"/> (unknown → <see cref="ArgumentException"/>).</summary>
    public static Architecture Of(string modelType) =>
        Known.TryGetValue(modelType, out var arch)
            ? arch
            : throw new ArgumentException($"unsupported model_type \"{modelType}\" (supported: {string.Join(", ", Supported)})");

    /// <summary>
    /// Parses a <c>config.json</c> object; <paramref name="source"/> names the file in errors.
    /// Unknown <c>model_type</c>, missing or malformed fields → <see cref="InputException"/>.
    /// </summary>
    public static ModelConfig ParseConfig(JsonObject raw, string source)
    {
        var reader = new ConfigReader(raw, source);
        string type = reader.OptString("model_type") ?? throw reader.Error($"missing required field \"model_type\" (supported: {string.Join(", ", Supported)})");
        if (!Known.TryGetValue(type, out var arch))
            throw reader.Error($"unsupported model_type \"{type}\" (supported: {string.Join(", ", Supported)})");
        return arch.Parse(raw, source);
    }

    /// <summary>Parses <c>config.json</c> text (bad JSON → <see cref="InputException"/>).</summary>
    public static ModelConfig ParseConfig(string json, string source)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(json); }
        catch (System.Text.Json.JsonException e) { throw new InputException(source, $"not valid JSON: {e.Message}", e); }
        return node is JsonObject obj ? ParseConfig(obj, source) : throw new InputException(source, "expected a JSON object");
    }

    /// <summary>
    /// A model on <paramref name="device"/> (CPU by default) with zero weights and unit norm scales, to be filled
    /// from a checkpoint (<see cref="ModelLoader.Load"/>) or initialised (<see cref="ModelLoader.Create(ModelConfig, long)"/>).
    /// </summary>
    public static CausalLM Build(ModelConfig config, Device? device = null) => Of(config.ModelType).Build(config, device);
}
