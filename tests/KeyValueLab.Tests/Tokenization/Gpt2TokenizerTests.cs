using System.Text;
using System.Text.Json;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Tokenization;

public class Gpt2TokenizerTests
{
    public static TheoryData<int> VocabCaseIndices => new(Enumerable.Range(0, TokenizerFixtures.Gpt2VocabCases.Count));

    [Fact]
    public void LlamaCppFixtureHas46InputsAndOneTrailingSeparator()
    {
        Assert.Equal(46, TokenizerFixtures.Gpt2VocabCases.Count);
    }

    [Theory]
    [MemberData(nameof(VocabCaseIndices))]
    public void VocabAndMergesMatchLlamaCppFixture(int index)
    {
        var (text, ids) = TokenizerFixtures.Gpt2VocabCases[index];
        Assert.Equal(ids, TokenizerFixtures.Gpt2Files.Encode(text));
    }

    [Theory]
    [MemberData(nameof(VocabCaseIndices))]
    public void TokenizerJsonMatchesLlamaCppFixture(int index)
    {
        var (text, ids) = TokenizerFixtures.Gpt2VocabCases[index];
        Assert.Equal(ids, TokenizerFixtures.Gpt2Json.Encode(text));
    }

    [Fact]
    public void DecodeRestoresEveryFixtureInput()
    {
        foreach (var (text, ids) in TokenizerFixtures.Gpt2VocabCases)
            Assert.Equal(text, TokenizerFixtures.Gpt2Files.Decode(ids));
    }

    [Fact]
    public void StreamedTokenBytesConcatenateToTheText()
    {
        var tok = TokenizerFixtures.Gpt2Files;
        foreach (var (text, ids) in TokenizerFixtures.Gpt2VocabCases)
        {
            var bytes = new List<byte>();
            int previous = tok.EosId!.Value;
            foreach (int id in ids) { bytes.AddRange(tok.DecodeTokenBytes(previous, id)); previous = id; }
            Assert.Equal(Encoding.UTF8.GetBytes(text), bytes.ToArray());
        }
    }

    [Fact]
    public void SpecialTokensAndSizes()
    {
        foreach (var tok in new[] { TokenizerFixtures.Gpt2Files, TokenizerFixtures.Gpt2Json })
        {
            Assert.Equal(50257, tok.VocabSize);
            Assert.Equal(50256, tok.BosId);
            Assert.Equal(50256, tok.EosId);
            Assert.Equal(new[] { 64, 50256, 65 }, tok.Encode("a<|endoftext|>b"));
            Assert.Equal(new[] { 50256, 15496 }, tok.Encode("Hello", addBos: true));
            Assert.Equal("<|endoftext|>", tok.Decode([50256]));
            // Id 40559 is real GPT-2's "ĠClaude" (merges.txt's "ĠCla ude"; llama.cpp's GGUF vocabulary agrees).
            Assert.Equal(40559, tok.Encode(" Claude").Single());
            Assert.Equal(" Claude", tok.Decode([40559]));
        }
    }

    [Fact]
    public void TinyGpt2FixtureInputIdsAreTheSentencePlusEndOfText()
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(TestData.Path("fixtures/tiny_gpt2/expected.json")));
        var expected = doc.RootElement.GetProperty("input_ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        var tok = TokenizerFixtures.Gpt2Files;
        Assert.Equal(expected, tok.Encode("The capital of France is Paris.").Append(tok.EosId!.Value));
    }

    [Fact]
    public void TokenTextIsReadableAndShowsPartialCharactersAsBytes()
    {
        var tok = TokenizerFixtures.Gpt2Files;
        Assert.Equal(" Hello", tok.TokenText(18435));
        Assert.Equal("\n", tok.TokenText(198));
        // "🦙" is 12520 99 247: the first token holds only part of the character's UTF-8 bytes.
        Assert.Equal(" <0xF0><0x9F>", tok.TokenText(12520));
        Assert.Equal(" \uFFFD", tok.DecodeToken(0, 12520));
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.TokenText(50257));
    }

    [Fact]
    public void ToyVocabularyLoadsAndEncodes()
    {
        var tok = (Gpt2Tokenizer)TokenizerLoader.Load(TestData.Path("hf_fixtures/tiny_gpt2_lm_buddy"));
        Assert.Equal(21, tok.VocabSize);
        Assert.Equal(20, tok.BosId);   // tokenizer_config.json: bos/eos "<|endoftext|>", unk "<unk>"
        Assert.Equal(20, tok.EosId);
        Assert.Equal(19, tok.UnknownId);
        Assert.Equal(new[] { 14, 3, 5, 6 }, tok.Encode(" lowest"));
        Assert.Equal(new[] { 19 }, tok.Encode("a"));   // 'a' is not in the toy vocabulary
        Assert.Equal(" lowest", tok.Decode(tok.Encode(" lowest")));
    }
}
