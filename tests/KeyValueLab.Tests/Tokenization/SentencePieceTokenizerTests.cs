using KeyValueLab.Tokenization;

namespace KeyValueLab.Tests.Tokenization;

public class SentencePieceTokenizerTests
{
    [Fact]
    public void TokenizerModelMatchesTestC()
    {
        var cases = TokenizerFixtures.EncodeCases("llama2_tokenizer/llama2c_test_c_encode_fixtures.json");
        Assert.Equal(5, cases.Count);
        foreach (var (text, bos, ids) in cases)
            Assert.Equal(ids, TokenizerFixtures.Llama2Model.Encode(text, bos));
    }

    [Fact]
    public void SpecialIdsAndSize()
    {
        var tok = TokenizerFixtures.Llama2Model;
        Assert.Equal(32000, tok.VocabSize);
        Assert.Equal(1, tok.BosId);
        Assert.Equal(2, tok.EosId);
        Assert.Equal(0, tok.UnknownId);
        Assert.Equal(" the", tok.TokenText(278));
        Assert.Equal("<s>", tok.TokenText(1));
        Assert.Equal("<0x0A>", tok.TokenText(13));
    }

    [Fact]
    public void StreamingDecodeEqualsLlama2cOnTheSameVocabulary()
    {
        // llama2.c's tokenizer.bin is an export of this tokenizer.model, so every token must print the same.
        var model = TokenizerFixtures.Llama2Model;
        var bin = TokenizerFixtures.Llama2Bin;
        Assert.Equal(bin.VocabSize, model.VocabSize);
        for (int id = 0; id < model.VocabSize; id++)
        {
            Assert.Equal(bin.DecodeTokenBytes(1, id), model.DecodeTokenBytes(1, id));
            Assert.Equal(bin.DecodeTokenBytes(0, id), model.DecodeTokenBytes(0, id));
        }
    }

    [Theory]
    [InlineData("I believe the meaning of life is")]
    [InlineData("Zoë says: naïve café — 🦙!")]
    [InlineData("  two leading spaces\n\ttab ")]
    public void DecodeInvertsEncode(string text)
    {
        var tok = TokenizerFixtures.Llama2Model;
        Assert.Equal(text, tok.Decode(tok.Encode(text, addBos: true)));
        Assert.Equal(TokenizerFixtures.Llama2Bin.Encode(text, addBos: true), tok.Encode(text, addBos: true));
    }
}
