using System.Text.Json.Nodes;
using TorchSharp;

namespace KeyValueLab.Checkpoints;

/// <summary>
/// A llama.cpp GGUF model presented as a Hugging Face checkpoint: tensors under their Hugging Face names and in
/// their Hugging Face layout, and a <c>config.json</c> made from the <c>{arch}.*</c> metadata.
/// </summary>
/// <remarks>
/// llama.cpp's converter (convert_hf_to_gguf.py, <c>LlamaModel.permute</c>) reorders the rows of q_proj and
/// k_proj within each head from Hugging Face's rotate-half layout (pairs i, i + d/2) to ggml's interleaved one
/// (pairs 2i, 2i + 1): <c>w.reshape(heads, 2, d/2, in).swapaxes(1, 2)</c>. <see cref="ReadFloat32"/> undoes it
/// (<see cref="Unpermute"/>); <see cref="Permute"/> redoes it for writing. GPT-2's Conv1D weights are stored
/// <c>[out, in]</c> in GGUF and <c>[in, out]</c> in Hugging Face checkpoints; they are presented as the latter.
/// Gemma's norms are stored as 1 + w and GPT-NeoX's fused q/k/v rows regrouped (<see cref="GgufLayout"/>).
/// </remarks>
public sealed class GgufCheckpoint : ICheckpoint
{
    private readonly Dictionary<string, (string Gguf, GgufLayout Layout, int Heads)> _map;

    public string SourcePath => File.SourcePath;
    public GgufFile File { get; }
    public JsonObject Config { get; }
    public IReadOnlyList<TensorInfo> Tensors { get; }

    private GgufCheckpoint(GgufFile file, JsonObject config, Dictionary<string, (string, GgufLayout, int)> map, List<TensorInfo> tensors)
    {
        File = file;
        Config = config;
        _map = map;
        Tensors = tensors;
    }

    /// <summary>Opens a GGUF model file of a supported architecture.</summary>
    /// <exception cref="InputException">Malformed file, unsupported architecture or tensor type, missing metadata, unknown tensor names.</exception>
    public static GgufCheckpoint Open(string path)
    {
        var file = GgufFile.Open(path);
        string archName = GgufMetadata.String(file, "general.architecture");
        var arch = GgufArchitecture.ForGguf(archName)
            ?? throw new InputException(path, $"general.architecture \"{archName}\" is not supported (supported: {string.Join(", ", GgufArchitecture.All.Select(a => a.Name).Distinct())})");
        var config = MakeConfig(file, arch);
        int heads = (int)GgufMetadata.UInt(file, $"{arch.Name}.attention.head_count");
        int kvHeads = file.Metadata.ContainsKey($"{arch.Name}.attention.head_count_kv") ? (int)GgufMetadata.UInt(file, $"{arch.Name}.attention.head_count_kv") : heads;

        var map = new Dictionary<string, (string, GgufLayout, int)>(StringComparer.Ordinal);
        var tensors = new List<TensorInfo>();
        foreach (var t in file.GgufTensors)
        {
            string hf = arch.ToHf(t.Name) ?? throw new InputException(path, $"tensor {t.Name} is not part of a {arch.Name} model known here");
            var layout = arch.LayoutOf(hf);
            int n = layout switch
            {
                GgufLayout.RotaryInterleaved => hf.EndsWith(".k_proj.weight", StringComparison.Ordinal) ? kvHeads : heads,
                GgufLayout.QkvByHead => heads,
                _ => 0,
            };
            string shape = $"[{string.Join(", ", t.Shape)}]";
            if (layout == GgufLayout.Transposed && t.Shape.Length != 2) throw new InputException(path, $"tensor {t.Name}: shape {shape}, expected 2 dimensions");
            if (layout == GgufLayout.RotaryInterleaved && (t.Shape.Length != 2 || heads == 0 || t.Shape[0] % (2 * n) != 0))
                throw new InputException(path, $"tensor {t.Name}: shape {shape} cannot hold {n} heads of even size");
            if (layout == GgufLayout.QkvByHead && (t.Shape.Length > 2 || heads == 0 || t.Shape[0] % (3 * n) != 0))
                throw new InputException(path, $"tensor {t.Name}: shape {shape} cannot hold q, k and v of {n} heads");
            map[hf] = (t.Name, layout, n);
            tensors.Add(new TensorInfo(hf, GgufFile.DTypeName(t.Type), layout == GgufLayout.Transposed ? [t.Shape[1], t.Shape[0]] : t.Shape));
        }
        return new GgufCheckpoint(file, config, map, tensors);
    }

    private static JsonObject MakeConfig(GgufFile file, GgufArchitecture arch)
    {
        var config = new JsonObject
        {
            ["model_type"] = arch.ModelType,
            ["architectures"] = new JsonArray(arch.HfClass),
        };
        foreach (var (key, suffix, type, required) in arch.Fields)
        {
            string metaKey = $"{arch.Name}.{suffix}";
            if (!file.Metadata.ContainsKey(metaKey))
            {
                if (required) throw new InputException(file.SourcePath, $"metadata {metaKey} is missing");
                continue;
            }
            config[key] = type switch
            {
                GgufType.Float32 => JsonValue.Create(Shortest(GgufMetadata.Float(file, metaKey))),
                GgufType.Bool => JsonValue.Create(GgufMetadata.Bool(file, metaKey, false)),
                _ => JsonValue.Create((int)GgufMetadata.UInt(file, metaKey)),
            };
        }
        var embed = file.GgufTensors.FirstOrDefault(t => t.Name == "token_embd.weight")
            ?? throw new InputException(file.SourcePath, "tensor token_embd.weight is missing");
        config["vocab_size"] = (int)embed.Shape[0];
        config["tie_word_embeddings"] = file.GgufTensors.All(t => t.Name != "output.weight");
        string Key(string suffix) => $"{arch.Name}.{suffix}";
        int HeadDim() => file.Metadata.ContainsKey(Key("attention.key_length")) ? (int)GgufMetadata.UInt(file, Key("attention.key_length"))
            : (int)GgufMetadata.UInt(file, Key("embedding_length")) / Math.Max(1, (int)GgufMetadata.UInt(file, Key("attention.head_count")));
        // The rotated features of each head as a fraction of it (Phi-3's partial_rotary_factor, GPT-NeoX's rotary_pct).
        double? RotaryFraction()
        {
            if (!file.Metadata.ContainsKey(Key("rope.dimension_count"))) return null;
            return (double)GgufMetadata.UInt(file, Key("rope.dimension_count")) / HeadDim();
        }
        switch (arch.ModelType)
        {
            case "llama" or "qwen2" or "gemma" or "gemma2":
                if (arch.ModelType is "llama" or "qwen2") config["hidden_act"] = "silu";
                else
                {
                    // llama.cpp's Gemma MLPs use ggml_gelu, the tanh approximation.
                    config["hidden_act"] = "gelu_pytorch_tanh";
                    config["hidden_activation"] = "gelu_pytorch_tanh";
                }
                if (arch.ModelType == "qwen2") config["use_sliding_window"] = false;
                if (file.Metadata.ContainsKey(Key("attention.key_length"))) config["head_dim"] = (int)GgufMetadata.UInt(file, Key("attention.key_length"));
                else if (arch.ModelType is "gemma" or "gemma2") config["head_dim"] = HeadDim();
                if (arch.ModelType == "gemma2")
                {
                    // Not stored: llama.cpp scales queries by 1/sqrt(head_dim), by 1/sqrt(hidden/heads) for the 27B model (46 layers).
                    int layers = (int)GgufMetadata.UInt(file, Key(GgufArchitecture.LayerCountSuffix));
                    config["query_pre_attn_scalar"] = layers == 46 ? (int)GgufMetadata.UInt(file, Key("embedding_length")) / (int)GgufMetadata.UInt(file, Key("attention.head_count")) : HeadDim();
                }
                string scaling = Key("rope.scaling.type");
                if (file.Metadata.ContainsKey(scaling))
                {
                    string s = GgufMetadata.String(file, scaling);
                    if (s == "linear") config["rope_scaling"] = new JsonObject { ["type"] = "linear", ["factor"] = GgufMetadata.Float(file, Key("rope.scaling.factor")) };
                    else if (s != "none") throw new InputException(file.SourcePath, $"{scaling} \"{s}\" is not supported (supported: none, linear)");
                }
                break;
            case "phi3":
                config["hidden_act"] = "silu";
                if (RotaryFraction() is double f) config["partial_rotary_factor"] = f;
                if (!config.ContainsKey("sliding_window")) config["sliding_window"] = null;
                break;
            case "gpt_neox":
                // Pythia's exact GELU (llama.cpp computes the tanh approximation; see docs/gguf.md).
                config["hidden_act"] = "gelu";
                config["attention_bias"] = true;
                if (RotaryFraction() is double p) config["rotary_pct"] = p;
                break;
            default:
                config["activation_function"] = "gelu_new";
                break;
        }
        foreach (var (key, meta) in new[] { ("bos_token_id", "tokenizer.ggml.bos_token_id"), ("eos_token_id", "tokenizer.ggml.eos_token_id") })
            if (file.Metadata.ContainsKey(meta)) config[key] = (int)GgufMetadata.UInt(file, meta);
        config["torch_dtype"] = "float32";
        return config;
    }

    // A float32 value as the decimal that prints it shortest (1e-05, not 9.99999974738e-06), as config.json has it.
    private static double Shortest(double v) => double.Parse(((float)v).ToString("R", System.Globalization.CultureInfo.InvariantCulture), System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>One tensor by Hugging Face name, fp32, in Hugging Face layout.</summary>
    public torch.Tensor ReadFloat32(string name)
    {
        if (!_map.TryGetValue(name, out var m)) throw new KeyNotFoundException($"{SourcePath}: no tensor named {name}");
        var value = File.ReadFloat32(m.Gguf);
        if (m.Layout == GgufLayout.AsIs) return value;
        using (value) return ToHf(value, m.Layout, m.Heads);
    }

    /// <summary>A tensor as llama.cpp's converter stores it, back in Hugging Face layout (inverse of <see cref="FromHf"/>).</summary>
    internal static torch.Tensor ToHf(torch.Tensor w, GgufLayout layout, int heads) => layout switch
    {
        GgufLayout.RotaryInterleaved => Unpermute(w, heads),
        GgufLayout.Transposed => w.t().contiguous(),
        GgufLayout.PlusOne => w - 1,
        GgufLayout.QkvByHead => Regroup(w, 3, heads),
        _ => w.alias(),
    };

    /// <summary>A Hugging Face tensor in the layout llama.cpp's converter writes.</summary>
    internal static torch.Tensor FromHf(torch.Tensor w, GgufLayout layout, int heads) => layout switch
    {
        GgufLayout.RotaryInterleaved => Permute(w, heads),
        GgufLayout.Transposed => w.t().contiguous(),
        GgufLayout.PlusOne => w + 1,
        GgufLayout.QkvByHead => Regroup(w, heads, 3),
        _ => w.alias(),
    };

    // Rows [a][b][d] → [b][a][d] (and the trailing input dimension, if any, kept): GPT-NeoX's per-head q, k, v
    // (convert_hf_to_gguf.py GPTNeoXModel: reshape(n_head, 3, d, in), then q, k, v of all heads concatenated).
    private static torch.Tensor Regroup(torch.Tensor w, int a, int b)
    {
        long rows = w.shape[0];
        long[] rest = w.shape[1..];
        using var r = w.reshape([a, b, rows / a / b, .. rest]);
        using var s = r.transpose(0, 1);
        return s.reshape(w.shape).contiguous();
    }

    /// <summary>ggml's interleaved q/k rows back to Hugging Face's rotate-half rows (inverse of <see cref="Permute"/>).</summary>
    public static torch.Tensor Unpermute(torch.Tensor w, int heads)
    {
        long rows = w.shape[0], cols = w.shape[1];
        using var r = w.reshape(heads, rows / heads / 2, 2, cols);
        using var s = r.transpose(1, 2);
        return s.reshape(rows, cols).contiguous();
    }

    /// <summary>Hugging Face q/k rows to llama.cpp's order: <c>w.reshape(heads, 2, d/2, in).swapaxes(1, 2)</c>.</summary>
    public static torch.Tensor Permute(torch.Tensor w, int heads)
    {
        long rows = w.shape[0], cols = w.shape[1];
        using var r = w.reshape(heads, 2, rows / heads / 2, cols);
        using var s = r.transpose(1, 2);
        return s.reshape(rows, cols).contiguous();
    }

    public void Dispose() => File.Dispose();
}

/// <summary>Typed reads of GGUF metadata, each failure one line naming the key.</summary>
internal static class GgufMetadata
{
    public static GgufValue Get(GgufFile f, string key) =>
        f.Metadata.TryGetValue(key, out var v) ? v : throw new InputException(f.SourcePath, $"metadata {key} is missing");

    public static string String(GgufFile f, string key) =>
        Get(f, key) is { Type: GgufType.String, Value: string s } ? s : throw new InputException(f.SourcePath, $"metadata {key}: expected a string");

    public static long UInt(GgufFile f, string key)
    {
        var v = Get(f, key);
        return v.Value switch
        {
            ulong u when v.Type != GgufType.Array && u <= int.MaxValue => (long)u,
            long l when v.Type != GgufType.Array && l is >= 0 and <= int.MaxValue => l,
            _ => throw new InputException(f.SourcePath, $"metadata {key}: expected a non-negative integer"),
        };
    }

    public static double Float(GgufFile f, string key) =>
        Get(f, key) is { Type: GgufType.Float32 or GgufType.Float64, Value: double d } && double.IsFinite(d)
            ? d : throw new InputException(f.SourcePath, $"metadata {key}: expected a finite float");

    public static bool Bool(GgufFile f, string key, bool fallback) =>
        !f.Metadata.TryGetValue(key, out var v) ? fallback
            : v is { Type: GgufType.Bool, Value: bool b } ? b : throw new InputException(f.SourcePath, $"metadata {key}: expected a bool");

    public static T[] Array<T>(GgufFile f, string key, GgufType element)
    {
        var v = Get(f, key);
        if (v.Type != GgufType.Array || v.Value is not T[] items || (element != v.ElementType))
            throw new InputException(f.SourcePath, $"metadata {key}: expected an array of {element}");
        return items;
    }
}
