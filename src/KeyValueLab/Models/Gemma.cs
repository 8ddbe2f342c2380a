using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace KeyValueLab.Models;

// Gemma (Gemma Team 2024) with Hugging Face `model_type: "gemma"` names: the Llama body (transformers'
// modular_gemma.py derives it from Llama) with three changes. Embeddings are multiplied by √hidden
// (rounded to the compute dtype); RMSNorm scales by (1 + weight); the MLP is GeGLU,
// down(gelu_tanh(gate(x))·up(x)). head_dim is given explicitly (256 in the releases) and need not be
// hidden/heads. The head is tied to the unscaled embedding.
// The activation: transformers v4.38–v4.47 read `hidden_activation` (default gelu_pytorch_tanh, ignoring
// the Hub configs' `hidden_act: "gelu"`), v4.48+ read `hidden_act`. We follow the former, which is the
// tanh approximation the original JAX Gemma uses: `hidden_activation` if set, else gelu_pytorch_tanh.

/// <summary>Gemma (<c>GemmaForCausalLM</c>): a <see cref="Llama"/> body with Gemma's options.</summary>
public static class Gemma
{
    public const string ModelType = "gemma";

    /// <summary>Parses a Gemma <c>config.json</c> (defaults as in Hugging Face <c>GemmaConfig</c>).</summary>
    public static ModelConfig ParseConfig(JsonObject raw, string source)
    {
        var c = new ConfigReader(raw, source);
        _ = Options(c);
        return Llama.ParseFamily(c, ModelType, tiedByDefault: true, maxPositionsByDefault: 8192, headDimByDefault: 256);
    }

    public static Llama Build(ModelConfig config, Device? device) => new(config, Options(new ConfigReader(config.Raw, "config.json")), device);

    internal static LlamaOptions Options(ConfigReader c) =>
        LlamaOptions.Read(c) with { Activation = Activations.Parse(c, "hidden_activation", "gelu_pytorch_tanh"), NormPlusOne = true, ScaleEmbeddings = true };
}
