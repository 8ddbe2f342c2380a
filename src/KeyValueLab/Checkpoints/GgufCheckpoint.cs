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
/// </remarks>
public sealed class GgufCheckpoint : ICheckpoint
{
    private readonly Dictionary<string, (string Gguf, int PermuteHeads, bool Transpose)> _map;

    public string SourcePath => File.SourcePath;
    public GgufFile File { get; }
    public JsonObject Config { get; }
    public IReadOnlyList<TensorInfo> Tensors { get; }

    private GgufCheckpoint(GgufFile file, JsonObject config, Dictionary<string, (string, int, bool)> map, List<TensorInfo> tensors)
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
            ?? throw new InputException(path, $"general.architecture \"{archName}\" is not supported (supported: {string.Join(", ", GgufArchitecture.All.Select(a => a.Name))})");
        var config = MakeConfig(file, arch);
        int heads = (int)GgufMetadata.UInt(file, $"{arch.Name}.attention.head_count");
        int kvHeads = file.Metadata.ContainsKey($"{arch.Name}.attention.head_count_kv") ? (int)GgufMetadata.UInt(file, $"{arch.Name}.attention.head_count_kv") : heads;

        var map = new Dictionary<string, (string, int, bool)>(StringComparer.Ordinal);
        var tensors = new List<TensorInfo>();
        foreach (var t in file.GgufTensors)
        {
            string hf = arch.ToHf(t.Name) ?? throw new InputException(path, $"tensor {t.Name} is not part of a {arch.Name} model known here");
            int permute = arch.PermutesQk && hf.EndsWith(".self_attn.q_proj.weight", StringComparison.Ordinal) ? heads
                : arch.PermutesQk && hf.EndsWith(".self_attn.k_proj.weight", StringComparison.Ordinal) ? kvHeads : 0;
            bool transpose = arch.IsHfTransposed(hf);
            if (transpose && t.Shape.Length != 2) throw new InputException(path, $"tensor {t.Name}: expected 2 dimensions");
            if (permute > 0 && (t.Shape.Length != 2 || t.Shape[0] % (2 * permute) != 0))
                throw new InputException(path, $"tensor {t.Name}: shape [{string.Join(", ", t.Shape)}] cannot hold {permute} heads of even size");
            map[hf] = (t.Name, permute, transpose);
            tensors.Add(new TensorInfo(hf, GgufFile.DTypeName(t.Type), transpose ? [t.Shape[1], t.Shape[0]] : t.Shape));
        }
        return new GgufCheckpoint(file, config, map, tensors);
    }

    private static JsonObject MakeConfig(GgufFile file, GgufArchitecture arch)
    {
        var config = new JsonObject
        {
            ["model_type"] = arch.ModelType,
            ["architectures"] = new JsonArray(arch.ModelType switch { "gpt2" => "GPT2LMHeadModel", "qwen2" => "Qwen2ForCausalLM", _ => "LlamaForCausalLM" }),
        };
        foreach (var (key, suffix, type, required) in arch.Fields)
        {
            string metaKey = $"{arch.Name}.{suffix}";
            if (!file.Metadata.ContainsKey(metaKey))
            {
                if (required) throw new InputException(file.SourcePath, $"metadata {metaKey} is missing");
                continue;
            }
            config[key] = type == GgufType.Float32 ? JsonValue.Create(Shortest(GgufMetadata.Float(file, metaKey))) : JsonValue.Create((int)GgufMetadata.UInt(file, metaKey));
        }
        var embed = file.GgufTensors.FirstOrDefault(t => t.Name == "token_embd.weight")
            ?? throw new InputException(file.SourcePath, "tensor token_embd.weight is missing");
        config["vocab_size"] = (int)embed.Shape[0];
        config["tie_word_embeddings"] = file.GgufTensors.All(t => t.Name != "output.weight");
        if (arch.IsLlamaFamily)
        {
            config["hidden_act"] = "silu";
            if (arch == GgufArchitecture.Qwen2) config["use_sliding_window"] = false;
            string keyLength = $"{arch.Name}.attention.key_length";
            if (file.Metadata.ContainsKey(keyLength)) config["head_dim"] = (int)GgufMetadata.UInt(file, keyLength);
            string scaling = $"{arch.Name}.rope.scaling.type";
            if (file.Metadata.ContainsKey(scaling))
            {
                string s = GgufMetadata.String(file, scaling);
                if (s == "linear") config["rope_scaling"] = new JsonObject { ["type"] = "linear", ["factor"] = GgufMetadata.Float(file, $"{arch.Name}.rope.scaling.factor") };
                else if (s != "none") throw new InputException(file.SourcePath, $"{scaling} \"{s}\" is not supported (supported: none, linear)");
            }
        }
        else config["activation_function"] = "gelu_new";
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
        if (m.PermuteHeads > 0) using (value) return Unpermute(value, m.PermuteHeads);
        if (m.Transpose) using (value) return value.t().contiguous();
        return value;
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
