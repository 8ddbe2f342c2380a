using System.CommandLine;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Cli;

/// <summary>Options shared by every command that loads a model, and how they are resolved.</summary>
internal static class ModelOptions
{
    public static Option<string> Model() => new("--model", "-m")
    {
        Description = "Model: a Hugging Face folder (config.json + safetensors) or a llama2.c .bin file.",
        Required = true,
    };

    public static Option<string?> Tokenizer() => new("--tokenizer", "-z")
    {
        Description = "Tokenizer file or folder (tokenizer.json, vocab.json+merges.txt, tokenizer.model, llama2.c tokenizer.bin). " +
                      "Default: the model folder itself, or tokenizer.bin beside a llama2.c .bin file.",
    };

    /// <summary>The explicit tokenizer, else the model folder's, else tokenizer.bin next to a llama2.c file.</summary>
    public static ITokenizer LoadTokenizer(string modelPath, string? tokenizerPath) =>
        TokenizerLoader.ForModel(modelPath, tokenizerPath, "pass --tokenizer PATH");
}

/// <summary>A command-line value out of range; reported like a parse error (exit code 2).</summary>
internal sealed class UsageException(string message) : Exception(message);
