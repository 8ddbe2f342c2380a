using System.CommandLine;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;
using TorchSharp;

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

    public static Option<string> DType() => new Option<string>("--dtype")
    {
        Description = "How linear weights are kept in memory: stored (as the checkpoint stores them; BF16/F16 stay BF16/F16 and are " +
                      "widened per call), f32, bf16 or f16. Compute is always fp32.",
        DefaultValueFactory = _ => "stored",
    }.AcceptOnlyFromAmong("stored", "f32", "bf16", "f16");

    public static Option<string> Device() => new("--device")
    {
        Description = "Where the model's tensors live: cpu (this build's libtorch is CPU-only; a CUDA build adds cuda and cuda:N).",
        DefaultValueFactory = _ => "cpu",
    };

    public static Option<bool> FourBit() => new("--4bit")
    {
        Description = "Quantise the base linears to NF4 with double quantisation (bitsandbytes layout) as they are read; compute in fp32.",
    };

    /// <summary>The load options chosen by <c>--dtype</c>, <c>--device</c> and (where the command has it) <c>--4bit</c>.</summary>
    public static LoadOptions Loading(ParseResult parse, Option<string> dtype, Option<string> device, Option<bool>? fourBit = null)
    {
        var kept = parse.GetValue(dtype) switch
        {
            "f32" => WeightDType.F32, "bf16" => WeightDType.BF16, "f16" => WeightDType.F16, _ => WeightDType.Stored,
        };
        string name = parse.GetValue(device) ?? "cpu";
        torch.Device where;
        try { where = torch.device(name); }
        catch (Exception e) when (e is ArgumentException or FormatException or System.Runtime.InteropServices.ExternalException)
        {
            throw new UsageException($"--device {name}: not a device (cpu, cuda, cuda:N)");
        }
        if (where.type == DeviceType.CUDA && !torch.cuda.is_available())
            throw new UsageException($"--device {name}: this build's libtorch has no CUDA (see docs/performance.md for a CUDA build)");
        if (where.type is not (DeviceType.CPU or DeviceType.CUDA))
            throw new UsageException($"--device {name}: only cpu and cuda are supported");
        return new LoadOptions { DType = kept, Device = where, FourBit = fourBit is not null && parse.GetValue(fourBit) };
    }

    /// <summary>The explicit tokenizer, else the model folder's, else tokenizer.bin next to a llama2.c file; refused when its ids exceed the model's vocabulary.</summary>
    public static ITokenizer LoadTokenizer(string modelPath, string? tokenizerPath, ModelConfig model) =>
        TokenizerLoader.ForModel(modelPath, tokenizerPath, "pass --tokenizer PATH", model.VocabSize);
}

/// <summary>A command-line value out of range; reported like a parse error (exit code 2).</summary>
internal sealed class UsageException(string message) : Exception(message);
