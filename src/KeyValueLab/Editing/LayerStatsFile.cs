using System.Globalization;
using System.IO.Compression;
using System.Text;
using System.Text.RegularExpressions;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Editing;

/// <summary>
/// ROME/MEMIT/AlphaEdit statistics files (<c>rome/layer_stats.py</c>): a NumPy <c>.npz</c> (a zip of <c>.npy</c> arrays)
/// holding <c>CombinedStat.state_dict()</c> of a <c>SecondMoment</c>: <c>mom2.mom2</c>, the uncentred sum Σ x xᵀ
/// (<c>[d, d]</c>, float32 or float64), <c>mom2.count</c>, the number of rows summed, and <c>mom2.constructor</c>,
/// the class that made it. E[x xᵀ] = mom2 / count, which is what ROME's <c>stat.mom2.moment()</c> returns.
/// </summary>
/// <remarks>Files are named <c>{module}_{precision}_mom2{_samples}.npz</c>, e.g. <c>transformer.h.17.mlp.c_proj_float32_mom2_100000.npz</c>.</remarks>
public static partial class LayerStatsFile
{
    private const string Constructor = "util.runningstats.SecondMoment()";

    /// <summary>The uncentred sum Σ x xᵀ (float32 <c>[d, d]</c>) and the count of a layer_stats file.</summary>
    /// <exception cref="InputException">Not a readable .npz with a square <c>mom2.mom2</c> and a positive <c>mom2.count</c>.</exception>
    public static (Tensor Sum, long Count) Read(string path)
    {
        if (!File.Exists(path)) throw new InputException(path, "no such layer_stats file");
        try
        {
            using var zip = ZipFile.OpenRead(path);
            var sumEntry = zip.GetEntry("mom2.mom2.npy") ?? throw new InputException(path, "no mom2.mom2 array (not a ROME/MEMIT layer_stats file)");
            var countEntry = zip.GetEntry("mom2.count.npy") ?? throw new InputException(path, "no mom2.count array");
            var (shape, sum) = ReadNpy(path, "mom2.mom2", sumEntry);
            if (shape.Length != 2 || shape[0] != shape[1] || shape[0] == 0) throw new InputException(path, $"mom2.mom2 has shape ({string.Join(", ", shape)}), expected a square matrix");
            var (countShape, count) = ReadNpy(path, "mom2.count", countEntry);
            if (countShape.Length != 0 && !(countShape.Length == 1 && countShape[0] == 1)) throw new InputException(path, "mom2.count is not a single number");
            long n = (long)count[0];
            if (n <= 0 || n != count[0]) throw new InputException(path, $"mom2.count is {count[0]}, expected a positive whole number");
            var floats = new float[sum.Length];
            for (int i = 0; i < sum.Length; i++) floats[i] = (float)sum[i];
            if (floats.Any(f => !float.IsFinite(f))) throw new InputException(path, "mom2.mom2 has values that are not finite");
            return (tensor(floats, [shape[0], shape[1]]), n);
        }
        catch (InvalidDataException e)
        {
            throw new InputException(path, $"not a valid .npz (zip) file: {e.Message}");
        }
    }

    /// <summary>E[x xᵀ] = mom2 / count of a layer_stats file, float32 <c>[d, d]</c>.</summary>
    public static Tensor ReadMoment(string path)
    {
        var (sum, count) = Read(path);
        using var n = count.ToScalar();  // held for the call (HeldScalars)
        using (sum) return sum.to(ScalarType.Float64).div(n).to(ScalarType.Float32);
    }

    /// <summary>
    /// Writes E[x xᵀ] <paramref name="moment"/> over <paramref name="count"/> rows in the layer_stats layout (sum =
    /// moment·count in float32, as ROME's float32 statistics), atomically: nothing half-written is left.
    /// </summary>
    public static void Write(string path, Tensor moment, long count)
    {
        if (moment.dim() != 2 || moment.shape[0] != moment.shape[1]) throw new ArgumentException("the second moment must be square", nameof(moment));
        if (count <= 0) throw new ArgumentOutOfRangeException(nameof(count), "the count must be positive");
        using var n = count.ToScalar();  // held for the call (HeldScalars)
        using var sum = moment.to(ScalarType.Float64).mul(n).to(ScalarType.Float32).contiguous();
        var data = sum.data<float>().ToArray();
        var bytes = new byte[data.Length * 4];
        Buffer.BlockCopy(data, 0, bytes, 0, bytes.Length);
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        string tmp = path + $".{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            using (var stream = File.Create(tmp))
            using (var zip = new ZipArchive(stream, ZipArchiveMode.Create))
            {
                WriteNpy(zip, "mom2.constructor", $"<U{Constructor.Length}", "()", Encoding.UTF32.GetBytes(Constructor));
                WriteNpy(zip, "mom2.count", "<i8", "()", BitConverter.GetBytes(count));
                WriteNpy(zip, "mom2.mom2", "<f4", $"({moment.shape[0]}, {moment.shape[1]})", bytes);
            }
            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    /// <summary>The layer_stats file name ROME gives module <paramref name="module"/> (e.g. <c>transformer.h.17.mlp.c_proj</c>).</summary>
    public static string FileName(string module, long samples) => $"{module}_float32_mom2_{samples}.npz";

    private static void WriteNpy(ZipArchive zip, string name, string descr, string shape, byte[] data)
    {
        string header = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}";
        int total = 10 + header.Length + 1;
        header += new string(' ', (64 - total % 64) % 64) + "\n";
        var entry = zip.CreateEntry(name + ".npy", CompressionLevel.NoCompression);
        using var s = entry.Open();
        s.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
        s.Write(BitConverter.GetBytes((ushort)header.Length));
        s.Write(Encoding.ASCII.GetBytes(header));
        s.Write(data);
    }

    /// <summary>Reads a little-endian numeric .npy (f4, f8, i4, i8; C order) as doubles.</summary>
    private static (long[] Shape, double[] Values) ReadNpy(string path, string name, ZipArchiveEntry entry)
    {
        using var raw = entry.Open();
        using var ms = new MemoryStream();
        raw.CopyTo(ms);
        var b = ms.ToArray();
        if (b.Length < 10 || b[0] != 0x93 || Encoding.ASCII.GetString(b, 1, 5) != "NUMPY") throw new InputException(path, $"{name} is not a .npy array");
        int major = b[6];
        int headerLength = major == 1 ? BitConverter.ToUInt16(b, 8) : BitConverter.ToInt32(b, 8);
        int start = major == 1 ? 10 : 12;
        if (start + headerLength > b.Length) throw new InputException(path, $"{name}: truncated .npy header");
        string header = Encoding.ASCII.GetString(b, start, headerLength);
        var descr = DescrPattern().Match(header);
        var shapeMatch = ShapePattern().Match(header);
        if (!descr.Success || !shapeMatch.Success) throw new InputException(path, $"{name}: unreadable .npy header");
        if (header.Contains("'fortran_order': True", StringComparison.Ordinal)) throw new InputException(path, $"{name}: Fortran-order arrays are not supported");
        var shape = shapeMatch.Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(s => long.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        long n = shape.Aggregate(1L, (x, y) => x * y);
        string type = descr.Groups[1].Value;
        int size = type switch { "<f4" or "<i4" => 4, "<f8" or "<i8" => 8, _ => throw new InputException(path, $"{name}: dtype {type} is not supported (expected float32/64 or int32/64, little-endian)") };
        int offset = start + headerLength;
        if (offset + n * size > b.Length) throw new InputException(path, $"{name}: {n} values announced, file has {(b.Length - offset) / size}");
        var values = new double[n];
        for (long i = 0; i < n; i++)
        {
            int at = checked((int)(offset + i * size));
            values[i] = type switch
            {
                "<f4" => BitConverter.ToSingle(b, at),
                "<f8" => BitConverter.ToDouble(b, at),
                "<i4" => BitConverter.ToInt32(b, at),
                _ => BitConverter.ToInt64(b, at),
            };
        }
        return (shape, values);
    }

    [GeneratedRegex(@"'descr':\s*'([^']+)'")]
    private static partial Regex DescrPattern();

    [GeneratedRegex(@"'shape':\s*\(([^)]*)\)")]
    private static partial Regex ShapePattern();
}
