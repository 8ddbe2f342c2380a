using TorchSharp;

namespace KeyValueLab.Checkpoints;

/// <summary>
/// The dtype names of the safetensors format, their element sizes, and which of them KeyValueLab
/// reads (F32, F16, BF16: widened to fp32) and writes (the same three, narrowed from fp32).
/// </summary>
public static class SafetensorsDType
{
    public const string F32 = "F32";
    public const string F16 = "F16";
    public const string BF16 = "BF16";

    // Every dtype the format defines, so a file with e.g. I8 weights is told "unsupported", not "corrupt".
    private static readonly Dictionary<string, int> Sizes = new(StringComparer.Ordinal)
    {
        ["BOOL"] = 1, ["U8"] = 1, ["I8"] = 1, ["F8_E5M2"] = 1, ["F8_E4M3"] = 1,
        ["I16"] = 2, ["U16"] = 2, ["F16"] = 2, ["BF16"] = 2,
        ["I32"] = 4, ["U32"] = 4, ["F32"] = 4,
        ["I64"] = 8, ["U64"] = 8, ["F64"] = 8,
    };

    /// <summary>True for every dtype name the safetensors format defines.</summary>
    public static bool IsKnown(string dtype) => Sizes.ContainsKey(dtype);

    /// <summary>True for the dtypes this project reads and writes: F32, F16, BF16.</summary>
    public static bool IsSupported(string dtype) => dtype is F32 or F16 or BF16;

    /// <summary>Bytes per element of a known dtype.</summary>
    public static int ElementSize(string dtype) =>
        Sizes.TryGetValue(dtype, out int size) ? size : throw new ArgumentException($"unknown safetensors dtype {dtype}", nameof(dtype));

    /// <summary>The torch scalar type of a supported dtype.</summary>
    public static torch.ScalarType ToScalarType(string dtype) => dtype switch
    {
        F32 => torch.ScalarType.Float32,
        F16 => torch.ScalarType.Float16,
        BF16 => torch.ScalarType.BFloat16,
        _ => throw new ArgumentException($"unsupported dtype {dtype} (supported: F32, F16, BF16)", nameof(dtype)),
    };
}
