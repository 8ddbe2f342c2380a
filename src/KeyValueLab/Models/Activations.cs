using static TorchSharp.torch;

namespace KeyValueLab.Models;

/// <summary>The feed-forward activations named by <c>activation_function</c> / <c>hidden_act</c> in Hugging Face configs.</summary>
internal static class Activations
{
    public static readonly string[] Supported = ["gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "silu", "swish"];

    /// <summary>Returns the activation for a config name, or throws <see cref="InputException"/> naming the field.</summary>
    public static Func<Tensor, Tensor> Parse(ConfigReader config, string field, string fallback)
    {
        string name = config.String(field, fallback);
        return name switch
        {
            // gelu_new is the tanh approximation 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
            "gelu_new" or "gelu_pytorch_tanh" => x => nn.functional.gelu(x, TorchSharp.Modules.GELU.Approximate.tanh),
            "gelu" => x => nn.functional.gelu(x),
            "relu" => x => nn.functional.relu(x),
            "silu" or "swish" => x => nn.functional.silu(x),
            _ => throw config.Error($"field \"{field}\" is \"{name}\"; supported: {string.Join(", ", Supported)}"),
        };
    }
}
