using System.Text;
using System.Text.Json;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Tokenization;

public class Llama2cTokenizerTests
{
    private const string Tok512Cases = "llama2c_stories260K/tok512_encode_fixtures.json";
    private const string TestCCases = "llama2_tokenizer/llama2c_test_c_encode_fixtures.json";

    [Fact]
    public void Tok512MatchesRunCEncode()
    {
        var cases = TokenizerFixtures.EncodeCases(Tok512Cases);
        Assert.Equal(7, cases.Count);
        foreach (var (text, bos, ids) in cases)
            Assert.Equal(ids, TokenizerFixtures.Tok512.Encode(text, bos));
    }

    [Fact]
    public void Tok512PiecesMatchFixture()
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(TestData.Path(Tok512Cases)));
        foreach (var c in doc.RootElement.EnumerateArray())
        {
            var ids = c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32());
            var pieces = c.GetProperty("pieces").EnumerateArray().Select(x => x.GetString()!);
            Assert.Equal(pieces, ids.Select(TokenizerFixtures.Tok512.TokenText));
        }
    }

    [Fact]
    public void Llama2TokenizerBinMatchesTestC()
    {
        var cases = TokenizerFixtures.EncodeCases(TestCCases);
        Assert.Equal(5, cases.Count);
        foreach (var (text, bos, ids) in cases)
            Assert.Equal(ids, TokenizerFixtures.Llama2Bin.Encode(text, bos));
    }

    [Fact]
    public void HeaderAndSpecialIds()
    {
        var tok = TokenizerFixtures.Tok512;
        Assert.Equal(512, tok.VocabSize);
        Assert.Equal(7, tok.MaxTokenLength);
        Assert.Equal(1, tok.BosId);
        Assert.Equal(2, tok.EosId);
        Assert.Equal(32000, TokenizerFixtures.Llama2Bin.VocabSize);
        Assert.Equal(-1e9f, TokenizerFixtures.Llama2Bin.Score(259));   // "  "
        Assert.Equal(new[] { 1 }, tok.Encode("", addBos: true));
        Assert.Empty(tok.Encode(""));
    }

    [Fact]
    public void StreamingDecodeOfGreedySequenceReproducesRunC()
    {
        // run.c generate prints decode(token, next) for each step: BOS itself is never printed and the
        // piece after BOS loses its leading space. It ends with one '\n'.
        using var doc = JsonDocument.Parse(File.ReadAllBytes(TestData.Path("llama2c_stories260K/logits_once_upon_a_time_greedy64.json")));
        var sequence = doc.RootElement.GetProperty("greedy_token_sequence").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        string decoded = doc.RootElement.GetProperty("greedy_decoded").GetString()!;
        Assert.Equal(65, sequence.Length);

        var tok = TokenizerFixtures.Tok512;
        var stdout = new List<byte>();
        var text = new StringBuilder();
        for (int i = 0; i + 1 < sequence.Length; i++)
        {
            stdout.AddRange(tok.DecodeTokenBytes(sequence[i], sequence[i + 1]));
            text.Append(tok.DecodeToken(sequence[i], sequence[i + 1]));
        }
        Assert.Equal(decoded, text.ToString());
        Assert.Equal(decoded, tok.Decode(sequence));
        stdout.Add((byte)'\n');
        Assert.Equal(File.ReadAllBytes(TestData.Path("llama2c_stories260K/run_t0_n64_once_upon_a_time.txt")), stdout.ToArray());
    }

    [Fact]
    public void DecodeTokenFollowsRunC()
    {
        var tok = TokenizerFixtures.Tok512;
        Assert.Equal("Once", tok.DecodeToken(1, 403));    // after BOS the leading space goes
        Assert.Equal(" Once", tok.DecodeToken(261, 403));
        Assert.Equal("\n", tok.DecodeToken(426, 13));     // <0x0A>
        Assert.Equal(new byte[] { 0xE2 }, tok.DecodeTokenBytes(0, 0xE2 + 3));
        Assert.Equal("<0x0A>", tok.TokenText(13));
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.DecodeToken(1, 512));
    }

    [Theory]
    [InlineData("Hello, world 123")]
    [InlineData("Zoë says: naïve café — 🦙!")]
    [InlineData("  two leading spaces\n\ttab")]
    public void DecodeInvertsEncodeWithByteFallback(string text)
    {
        foreach (ITokenizer tok in new ITokenizer[] { TokenizerFixtures.Tok512, TokenizerFixtures.Llama2Bin })
        {
            Assert.Equal(text, tok.Decode(tok.Encode(text, addBos: true)));
            Assert.Equal(text, tok.Decode(tok.Encode(text)));
        }
    }

    [Fact]
    public void VocabSizeFromCheckpointLimitsWhatIsRead()
    {
        var tok = Llama2cTokenizer.FromFile(TestData.Path("llama2c_stories260K/tok512.bin"), vocabSize: 300);
        Assert.Equal(300, tok.VocabSize);
    }
}

public class Llama2cTokenizerScaleTests
{
    [Fact]
    public void LongTextRoundTripsAndAgreesWithSentencePiece()
    {
        // Speed is a benchmark's business, not a unit test's; this checks a ~10k-character text end to end.
        string story = string.Concat(Enumerable.Repeat("Once upon a time, Lily saw a big dog named Zoë 🦙. ", 200));
        var ids = TokenizerFixtures.Llama2Bin.Encode(story, addBos: true);
        var tok512 = TokenizerFixtures.Tok512.Encode(story, addBos: true);
        Assert.Equal(story, TokenizerFixtures.Llama2Bin.Decode(ids));
        Assert.Equal(story, TokenizerFixtures.Tok512.Decode(tok512));
        Assert.Equal(TokenizerFixtures.Llama2Model.Encode(story, addBos: true), ids);
    }

    [Fact]
    public void SafePrintfSkipsLoneNonPrintableBytes()
    {
        Assert.True(Llama2cTokenizer.IsPrintedByRunC("Once"u8));
        Assert.True(Llama2cTokenizer.IsPrintedByRunC("\n"u8));
        Assert.True(Llama2cTokenizer.IsPrintedByRunC("a"u8));
        Assert.False(Llama2cTokenizer.IsPrintedByRunC([]));
        Assert.False(Llama2cTokenizer.IsPrintedByRunC([0xF0]));
        Assert.False(Llama2cTokenizer.IsPrintedByRunC([0x07]));
    }
}
