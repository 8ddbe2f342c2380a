using System.IO.Compression;
using System.Text;
using KeyValueLab.Editing;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using KeyValueLab.Tests.Models;
using KeyValueLab.Tests.Tuning;
using KeyValueLab.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Editing;

/// <summary>ROME/MEMIT/AlphaEdit <c>layer_stats</c> .npz files: NumPy's own files read, ours written in the same layout, bad files refused.</summary>
public sealed class LayerStatsFileTests : IDisposable
{
    private readonly TempDir _dir = new();
    public void Dispose() => _dir.Dispose();

    [Fact]
    public void ReadsTheFilesNumpyWrote()
    {
        // np.savez(**CombinedStat(mom2=SecondMoment()).state_dict()) by the reference run (Fixtures/reference/editors/README.md).
        var (sum, count) = LayerStatsFile.Read(ReferenceFixtures.Path("editors/layer_stats/transformer.h.0.mlp.c_fc_float32_mom2_48.npz"));
        using (sum)
        {
            Assert.Equal(1053, count);
            Assert.Equal([16L, 16L], sum.shape);
            // Σ x xᵀ is symmetric with a positive diagonal.
            Assert.Equal(0, (sum - sum.t()).abs().max().item<float>());
            Assert.True(sum.diagonal().min().item<float>() > 0);
        }
    }

    /// <summary>The layout written by hand, as the documentation gives it: a zip of mom2.mom2.npy (float32 sum), mom2.count.npy (int64), mom2.constructor.npy.</summary>
    private static void WriteByHand(string path, float[] sum, string shape, long count)
    {
        using var stream = File.Create(path);
        using var zip = new ZipArchive(stream, ZipArchiveMode.Create);
        void Npy(string name, string descr, string shape, byte[] data)
        {
            string header = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}";
            header = header.PadRight(64 - 11) + "\n";
            using var s = zip.CreateEntry(name).Open();
            s.Write([0x93, .. "NUMPY"u8, 1, 0]);
            s.Write(BitConverter.GetBytes((ushort)header.Length));
            s.Write(Encoding.ASCII.GetBytes(header));
            s.Write(data);
        }
        var bytes = new byte[sum.Length * 4];
        Buffer.BlockCopy(sum, 0, bytes, 0, bytes.Length);
        Npy("mom2.mom2.npy", "<f4", shape, bytes);
        Npy("mom2.count.npy", "<i8", "()", BitConverter.GetBytes(count));
    }

    [Fact]
    public void HandWrittenLayoutReadsBackAsTheSameSecondMoment()
    {
        using var g = new Generator(3);
        using var x = randn(50, 6, generator: g);
        using var moment = x.t().matmul(x) / 50;
        string path = _dir.File("transformer.h.3.mlp.c_proj_float32_mom2_50.npz");
        using (var sum = moment * 50) WriteByHand(path, sum.contiguous().data<float>().ToArray(), "(6, 6)", 50);
        using var read = LayerStatsFile.ReadMoment(path);
        TensorAssert.CloseFp32(moment, read, "mom2 / count");

        // Ours, written and read back: same moment, same count.
        string ours = _dir.File("ours.npz");
        LayerStatsFile.Write(ours, moment, 50);
        var (sum2, count2) = LayerStatsFile.Read(ours);
        using (sum2)
        {
            Assert.Equal(50, count2);
            TensorAssert.CloseFp32(moment * 50, sum2, "written sum");
        }
        Assert.Empty(Directory.GetFiles(_dir.Path, "*.tmp"));
    }

    [Fact]
    public void SecondMomentsImportLayerStatsAndExportTheirOwn()
    {
        using var loaded = ModelLoader.Load(ReferenceFixtures.Path("editors/tiny_gpt2"));
        var tokenizer = TokenizerLoader.Load(ReferenceFixtures.Path("editors/tiny_gpt2"));
        var memory = new FfnMemory(loaded.Model);
        var point = new MomentPoint(1, "value-input", HookPoint.Linear(memory.ValuesName(1), memory.ValueModule(1)));
        string corpus = ReferenceFixtures.Path("editors/corpus.txt");
        var computed = new SecondMoments(corpus, 48, 32, _dir.File("cache"));
        var written = computed.ExportLayerStats(loaded.Model, tokenizer, [point], _dir.File("export"));
        Assert.Equal(Path.Combine(_dir.File("export"), "transformer.h.1.mlp.c_proj_float32_mom2_48.npz"), Assert.Single(written));

        // A SecondMoments over a corpus that does not exist on this run's cache takes the file instead of computing.
        var imported = new SecondMoments(corpus, 48, 32, _dir.File("empty-cache")) { LayerStatsDir = _dir.File("export") };
        using var fromFile = imported.Get(loaded.Model, tokenizer, [point])[0];
        using var direct = computed.Get(loaded.Model, tokenizer, [point])[0];
        TensorAssert.CloseFp32(direct, fromFile, "imported E[xxᵀ]");
        Assert.Contains(imported.Log, l => l.Contains("layer_stats", StringComparison.Ordinal));
        Assert.False(Directory.Exists(_dir.File("empty-cache")));
        var (_, count) = LayerStatsFile.Read(written[0]);
        Assert.Equal(1053, count);   // the rows ROME's run counted over the same corpus
    }

    [Theory]
    [InlineData("not a zip", "not a valid .npz")]
    [InlineData("no mom2", "no mom2.mom2 array")]
    [InlineData("zero count", "mom2.count is 0")]
    [InlineData("not square", "expected a square matrix")]
    public void BadFilesAreRefusedWithOneLine(string kind, string message)
    {
        string path = _dir.File(kind.Replace(' ', '_') + ".npz");
        switch (kind)
        {
            case "not a zip": File.WriteAllText(path, "hello"); break;
            case "no mom2":
                using (var z = new ZipArchive(File.Create(path), ZipArchiveMode.Create)) z.CreateEntry("other.npy");
                break;
            case "zero count": WriteByHand(path, new float[4], "(2, 2)", 0); break;
            case "not square": WriteByHand(path, new float[4], "(1, 4)", 3); break;
        }
        byte[] before = File.ReadAllBytes(path);
        var e = Assert.Throws<InputException>(() => LayerStatsFile.Read(path));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
        Assert.StartsWith(path + ": ", e.Message, StringComparison.Ordinal);
        Assert.Equal(before, File.ReadAllBytes(path));
    }
}
