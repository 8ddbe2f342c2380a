using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace KeyValueLab.Models;

/// <summary>The supported Hugging Face <c>model_type</c>s: config parsing and model construction by name.</summary>
public static class Architectures
{
    private static readonly Dictionary<string, (Func<JsonObject, string, ModelConfig> Parse, Func<ModelConfig, Device?, CausalLM> Build)> Known =
        new(StringComparer.Ordinal)
        {
            [Gpt2.ModelType] = (Gpt2.ParseConfig, (c, d) => new Gpt2(c, d)),
            [Gptj.ModelType] = (Gptj.ParseConfig, (c, d) => new Gptj(c, d)),
            [Llama.ModelType] = (Llama.ParseConfig, (c, d) => new Llama(c, d)),
            [Qwen2.ModelType] = (Qwen2.ParseConfig, Qwen2.Build),
            [Mistral.ModelType] = (Mistral.ParseConfig, Mistral.Build),
            [Gemma.ModelType] = (Gemma.ParseConfig, Gemma.Build),
            [GptNeox.ModelType] = (GptNeox.ParseConfig, (c, d) => new GptNeox(c, d)),
            [Phi3.ModelType] = (Phi3.ParseConfig, (c, d) => new Phi3(c, d)),
            [Gemma2.ModelType] = (Gemma2.ParseConfig, (c, d) => new Gemma2(c, d)),
        };

    /// <summary>The model types this build can run.</summary>
    public static IReadOnlyList<string> Supported { get; } = [Gpt2.ModelType, Gptj.ModelType, Llama.ModelType, Qwen2.ModelType, Mistral.ModelType, Gemma.ModelType, GptNeox.ModelType, Phi3.ModelType, Gemma2.ModelType];

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
    public static CausalLM Build(ModelConfig config, Device? device = null) =>
        Known.TryGetValue(config.ModelType, out var arch)
            ? arch.Build(config, device)
            : throw new ArgumentException($"unsupported model_type \"{config.ModelType}\" (supported: {string.Join(", ", Supported)})");
}
