using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace KeyValueLab.Models;

// Qwen2 (Qwen team 2024; Qwen2.5 has the same `model_type: "qwen2"`) with Hugging Face names: the Llama
// body (transformers' modular_qwen2.py derives it from Llama) with biases on q_proj, k_proj and v_proj
// but none on o_proj, and an optional sliding window: when `use_sliding_window` is true, layers from
// `max_window_layers` on attend to the last `sliding_window` keys (transformers v4.57 `layer_types`).
// Hub checkpoints have `use_sliding_window` false, so every layer sees every earlier key.

/// <summary>Qwen2 (<c>Qwen2ForCausalLM</c>): a <see cref="Llama"/> body with Qwen2's options.</summary>
public static class Qwen2
{
    public const string ModelType = "qwen2";

    /// <summary>Parses a Qwen2 <c>config.json</c> (defaults as in Hugging Face <c>Qwen2Config</c>).</summary>
    public static ModelConfig ParseConfig(JsonObject raw, string source)
    {
        var c = new ConfigReader(raw, source);
        var config = Llama.ParseFamily(c, ModelType, tiedByDefault: false, maxPositionsByDefault: 32768);
        _ = Options(c, config.NumLayers);
        return config;
    }

    public static Llama Build(ModelConfig config, Device? device) =>
        new(config, Options(new ConfigReader(config.Raw, "config.json"), config.NumLayers), device);

    internal static LlamaOptions Options(ConfigReader c, int layers)
    {
        var llama = LlamaOptions.Read(c);
        int? window = c.Bool("use_sliding_window", false) ? c.OptPositive("sliding_window", 4096) : null;
        int firstWindowed = c.OptInt("max_window_layers") ?? 28;
        var windows = SlidingWindows.PerLayer(c, layers, window, i => i >= firstWindowed);
        return llama with { QkvBias = true, OutputBias = false, LayerWindows = windows };
    }
}
