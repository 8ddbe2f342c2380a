using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace KeyValueLab.Models;

// Mistral (Jiang et al. 2023) with Hugging Face `model_type: "mistral"` names: the Llama body
// (transformers' modular_mistral.py derives it from Llama) with sliding-window attention on every
// layer: query t attends to keys t−W+1..t, W = `sliding_window` (none when null). The window is over
// cache positions, so it holds with the KV cache and with padding alike.

/// <summary>Mistral (<c>MistralForCausalLM</c>): a <see cref="Llama"/> body with a sliding window on every layer.</summary>
public static class Mistral
{
    public const string ModelType = "mistral";

    /// <summary>Parses a Mistral <c>config.json</c> (defaults as in Hugging Face <c>MistralConfig</c>).</summary>
    public static ModelConfig ParseConfig(JsonObject raw, string source)
    {
        var c = new ConfigReader(raw, source);
        var config = Llama.ParseFamily(c, ModelType, tiedByDefault: false, maxPositionsByDefault: 4096 * 32);
        _ = Options(c, config.NumLayers);
        return config;
    }

    public static Llama Build(ModelConfig config, Device? device) =>
        new(config, Options(new ConfigReader(config.Raw, "config.json"), config.NumLayers), device);

    internal static LlamaOptions Options(ConfigReader c, int layers)
    {
        // MistralConfig's default window is 4096; an explicit null turns it off.
        int? window = c.Raw.ContainsKey("sliding_window") ? c.OptInt("sliding_window") : 4096;
        c.Require(window is null or > 0, $"field \"sliding_window\" must be positive or null, got {window}");
        return LlamaOptions.Read(c) with { LayerWindows = SlidingWindows.PerLayer(c, layers, window, _ => true) };
    }
}

/// <summary>Which layers of a model attend through a sliding window.</summary>
internal static class SlidingWindows
{
    /// <summary>
    /// The window of each layer: transformers' <c>layer_types</c> list when the config has one
    /// ("sliding_attention" or "full_attention" per layer), else <paramref name="isSliding"/>;
    /// all null when <paramref name="window"/> is null.
    /// </summary>
    public static IReadOnlyList<int?> PerLayer(ConfigReader c, int layers, int? window, Func<int, bool> isSliding)
    {
        if (window is null) return [];
        if (c.Raw["layer_types"] is JsonArray types)
        {
            c.Require(types.Count == layers, $"field \"layer_types\" has {types.Count} entries for {layers} layers");
            return [.. types.Select((t, i) => t?.GetValueKind() == System.Text.Json.JsonValueKind.String ? t.GetValue<string>() switch
            {
                "sliding_attention" => window,
                "full_attention" => (int?)null,
                string other => throw c.Error($"field \"layer_types\" entry {i} is \"{other}\" (supported: sliding_attention, full_attention)"),
            } : throw c.Error($"field \"layer_types\" entry {i} must be a string"))];
        }
        return [.. Enumerable.Range(0, layers).Select(i => isSliding(i) ? window : null)];
    }
}
