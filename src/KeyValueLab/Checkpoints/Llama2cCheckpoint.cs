using System.Text.Json.Nodes;
using TorchSharp;

namespace KeyValueLab.Checkpoints;

/// <summary>
/// The seven int32 of a llama2.c legacy (v0) checkpoint header. The file stores vocab_size negative
/// when the classifier is not shared with the embedding; here <c>VocabSize</c> is |vocab_size| and
/// <c>SharedClassifier</c> says which.
/// </summary>
public sealed record Llama2cHeader(int Dim, int HiddenDim, int NumLayers, int NumHeads, int NumKvHeads, int VocabSize, int SeqLen, bool SharedClassifier)
{
    public int HeadSize => Dim / NumHeads;
    public int KvDim => HeadSize * NumKvHeads;
}

/// <summary>
/// A llama2.c <c>.bin</c> checkpoint (legacy v0: 7 int32 header, then fp32 arrays in run.c's order),
/// presented with Hugging Face Llama names and layout, plus a synthesised <c>LlamaConfig</c>.
/// </summary>
/// <remarks>
/// llama2.c rotates interleaved pairs (x[2i], x[2i+1]); Hugging Face Llama rotates halves
/// (x[i], x[i+d/2]). Hugging Face's convert_llama_weights_to_hf.py therefore permutes the rows of
/// q_proj and k_proj per head; <see cref="ReadFloat32"/> applies the same permutation, so the result
/// equals what that conversion produces and runs on a rotate-half Llama implementation.
/// </remarks>
public sealed class Llama2cCheckpoint : ICheckpoint
{
    private const int HeaderBytes = 7 * sizeof(int);

    /// <summary>Where a tensor lies: float offset in the file's float array and its shape.</summary>
    private sealed record Slot(TensorInfo Info, long FloatOffset, int PermuteHeads);

    private readonly Dictionary<string, Slot> _slots;

    /// <summary>The .bin file.</summary>
    public string SourcePath { get; }

    public Llama2cHeader Header { get; }

    public JsonObject Config { get; }

    /// <summary>Tensors with Hugging Face Llama names, in file order (all F32).</summary>
    public IReadOnlyList<TensorInfo> Tensors { get; }

    private Llama2cCheckpoint(string path, Llama2cHeader header, List<Slot> slots)
    {
        SourcePath = path;
        Header = header;
        _slots = slots.ToDictionary(s => s.Info.Name, StringComparer.Ordinal);
        Tensors = slots.Select(s => s.Info).ToArray();
        Config = MakeConfig(header);
    }

    /// <summary>Reads and validates the header and checks the file's size against it.</summary>
    /// <exception cref="InputException">Missing file, inconsistent header, or a size that does not match.</exception>
    public static Llama2cCheckpoint Open(string path)
    {
        RegularFile.Require(path);
        long length;
        var raw = new int[7];
        try
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            length = RandomAccess.GetLength(handle);
            if (length < HeaderBytes)
                throw new InputException(path, $"file is {length} bytes, too short for a llama2.c header ({HeaderBytes} bytes)");
            var bytes = new byte[HeaderBytes];
            if (RandomAccess.Read(handle, bytes, 0) != HeaderBytes) throw new IOException("short read of the header");
            for (int i = 0; i < 7; i++) raw[i] = BitConverter.ToInt32(bytes, 4 * i);
        }
        catch (IOException e)
        {
            throw new InputException(path, $"cannot read: {e.Message}", e);
        }

        var header = Validate(path, raw);
        long expected;
        try
        {
            expected = checked(HeaderBytes + 4 * FloatCount(header));
        }
        catch (OverflowException)
        {
            throw new InputException(path, "header is inconsistent: the sizes it gives overflow a 64-bit file length");
        }
        if (length != expected)
            throw new InputException(path,
                $"file is {length} bytes but its header (dim {header.Dim}, hidden {header.HiddenDim}, layers {header.NumLayers}, heads {header.NumHeads}, " +
                $"kv heads {header.NumKvHeads}, vocab {(header.SharedClassifier ? "" : "-")}{header.VocabSize}, seq_len {header.SeqLen}) implies {expected} bytes" +
                (length < expected ? " (truncated?)" : " (extra bytes: not a llama2.c v0 file, or a newer version?)"));
        // Only now, with the size confirmed, is the layer count small enough to list every tensor.
        var slots = Layout(header, out long totalFloats);
        if (totalFloats != FloatCount(header)) throw new InvalidOperationException("llama2.c layout and size disagree");
        return new Llama2cCheckpoint(path, header, slots);
    }

    private static Llama2cHeader Validate(string path, int[] h)
    {
        if (h[0] == 0x616b3432 /* "ak42" */)
            throw new InputException(path, "this is a llama2.c v1/v2 file (magic ak42); only the legacy v0 format is supported");
        string[] names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];
        for (int i = 0; i < 7; i++)
        {
            long v = i == 5 ? Math.Abs((long)h[i]) : h[i];
            if (v <= 0 || v > int.MaxValue) throw new InputException(path, $"header field {names[i]} is {h[i]}; it must be positive");
        }
        var header = new Llama2cHeader(h[0], h[1], h[2], h[3], h[4], (int)Math.Abs((long)h[5]), h[6], h[5] > 0);
        if (header.Dim % header.NumHeads != 0)
            throw new InputException(path, $"header is inconsistent: dim {header.Dim} is not a multiple of n_heads {header.NumHeads}");
        if (header.NumHeads % header.NumKvHeads != 0)
            throw new InputException(path, $"header is inconsistent: n_heads {header.NumHeads} is not a multiple of n_kv_heads {header.NumKvHeads}");
        if (header.HeadSize % 2 != 0)
            throw new InputException(path, $"header is inconsistent: head size {header.HeadSize} (dim / n_heads) must be even for rotary embeddings");
        return header;
    }

    /// <summary>Floats after the header, as run.c's memory_map_weights lays them out.</summary>
    private static long FloatCount(Llama2cHeader h)
    {
        checked
        {
            long L = h.NumLayers, dim = h.Dim, hidden = h.HiddenDim, kv = h.KvDim, vocab = h.VocabSize;
            long perLayer = dim + dim * dim + 2 * kv * dim + dim * dim + dim + 3 * hidden * dim;
            long freqs = 2L * h.SeqLen * (h.HeadSize / 2);
            return vocab * dim + L * perLayer + dim + freqs + (h.SharedClassifier ? 0 : vocab * dim);
        }
    }

    /// <summary>run.c's memory_map_weights order, with Hugging Face names.</summary>
    private static List<Slot> Layout(Llama2cHeader h, out long totalFloats)
    {
        var slots = new List<Slot>();
        long offset = 0;
        int L = h.NumLayers;
        long dim = h.Dim, hidden = h.HiddenDim, kv = h.KvDim;

        // One stacked array [layers, ...] per weight kind, each layer a Hugging Face tensor.
        void Stacked(string suffix, long[] shape, int permuteHeads = 0)
        {
            long size = shape.Aggregate(1L, (a, b) => checked(a * b));
            for (int l = 0; l < L; l++)
                slots.Add(new Slot(new TensorInfo($"model.layers.{l}.{suffix}", SafetensorsDType.F32, shape), offset + l * size, permuteHeads));
            offset = checked(offset + L * size);
        }
        void Single(string name, long[] shape)
        {
            slots.Add(new Slot(new TensorInfo(name, SafetensorsDType.F32, shape), offset, 0));
            offset = checked(offset + shape.Aggregate(1L, (a, b) => checked(a * b)));
        }

        Single("model.embed_tokens.weight", [h.VocabSize, dim]);
        Stacked("input_layernorm.weight", [dim]);
        Stacked("self_attn.q_proj.weight", [dim, dim], h.NumHeads);
        Stacked("self_attn.k_proj.weight", [kv, dim], h.NumKvHeads);
        Stacked("self_attn.v_proj.weight", [kv, dim]);
        Stacked("self_attn.o_proj.weight", [dim, dim]);
        Stacked("post_attention_layernorm.weight", [dim]);
        Stacked("mlp.gate_proj.weight", [hidden, dim]); // w1
        Stacked("mlp.down_proj.weight", [dim, hidden]); // w2
        Stacked("mlp.up_proj.weight", [hidden, dim]);   // w3
        Single("model.norm.weight", [dim]);
        offset = checked(offset + 2L * h.SeqLen * (h.HeadSize / 2));     // freq_cis_real, freq_cis_imag: unused
        if (!h.SharedClassifier) Single("lm_head.weight", [h.VocabSize, dim]);
        totalFloats = offset;

        // Hugging Face's order (by layer) reads better than run.c's (by kind).
        slots.Sort((a, b) => a.FloatOffset.CompareTo(b.FloatOffset));
        return slots;
    }

    private static JsonObject MakeConfig(Llama2cHeader h) => new()
    {
        ["architectures"] = new JsonArray("LlamaForCausalLM"),
        ["model_type"] = "llama",
        ["hidden_size"] = h.Dim,
        ["intermediate_size"] = h.HiddenDim,
        ["num_hidden_layers"] = h.NumLayers,
        ["num_attention_heads"] = h.NumHeads,
        ["num_key_value_heads"] = h.NumKvHeads,
        ["vocab_size"] = h.VocabSize,
        ["max_position_embeddings"] = h.SeqLen,
        ["rms_norm_eps"] = 1e-5,
        ["rope_theta"] = 10000.0,
        ["tie_word_embeddings"] = h.SharedClassifier,
        ["hidden_act"] = "silu",
        ["bos_token_id"] = 1,
        ["eos_token_id"] = 2,
        ["torch_dtype"] = "float32",
    };

    /// <summary>Reads one tensor as fp32, q/k rows permuted to the rotate-half layout.</summary>
    public torch.Tensor ReadFloat32(string name)
    {
        if (!_slots.TryGetValue(name, out var slot)) throw new KeyNotFoundException($"{SourcePath}: no tensor named {name}");
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("llama2.c files are little-endian");
        var t = torch.empty(slot.Info.Shape, dtype: torch.ScalarType.Float32);
        try
        {
            using (var handle = File.OpenHandle(SourcePath, FileMode.Open, FileAccess.Read, FileShare.Read))
                TensorBytes.ReadInto(handle, HeaderBytes + 4 * slot.FloatOffset, t, SourcePath, name);
            if (slot.PermuteHeads == 0) return t;
            using (t) return PermuteForRotateHalf(t, slot.PermuteHeads);
        }
        catch (IOException e)
        {
            t.Dispose();
            throw new InputException(SourcePath, $"cannot read tensor {name}: {e.Message}", e);
        }
    }

    /// <summary>
    /// Rows of each head go from interleaved pairs (0,1),(2,3),… to halves: row 2i → i and 2i+1 → i + d/2,
    /// as convert_llama_weights_to_hf.py's <c>permute</c>: view(heads, d/2, 2, in).transpose(1, 2).
    /// </summary>
    internal static torch.Tensor PermuteForRotateHalf(torch.Tensor w, int heads)
    {
        long rows = w.shape[0], cols = w.shape[1];
        using var v = w.view(heads, rows / heads / 2, 2, cols);
        using var tr = v.transpose(1, 2);
        return tr.reshape(rows, cols);
    }

    public void Dispose() { }
}
