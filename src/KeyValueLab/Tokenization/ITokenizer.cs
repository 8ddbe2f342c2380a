namespace KeyValueLab.Tokenization;

/// <summary>
/// Text ↔ token ids for one model's vocabulary. Implementations: <see cref="Gpt2Tokenizer"/> (byte-level BPE),
/// <see cref="SentencePieceTokenizer"/> (Llama <c>tokenizer.model</c>), <see cref="Llama2cTokenizer"/>
/// (llama2.c <c>tokenizer.bin</c>). Load any of them with <see cref="TokenizerLoader.Load"/>.
/// </summary>
public interface ITokenizer
{
    /// <summary>Number of token ids (largest id + 1).</summary>
    int VocabSize { get; }

    /// <summary>Beginning-of-sequence id, or null when the vocabulary has none.</summary>
    int? BosId { get; }

    /// <summary>End-of-sequence id, or null when the vocabulary has none.</summary>
    int? EosId { get; }

    /// <summary>Token ids of <paramref name="text"/>, preceded by <see cref="BosId"/> when <paramref name="addBos"/> is set and the vocabulary has one.</summary>
    IReadOnlyList<int> Encode(string text, bool addBos = false);

    /// <summary>The text of a token sequence. Bytes that do not form valid UTF-8 become U+FFFD.</summary>
    string Decode(IEnumerable<int> ids);

    /// <summary>
    /// The text a streaming generator prints for token <paramref name="id"/> after <paramref name="previousId"/>
    /// (for SentencePiece vocabularies llama2.c <c>run.c</c> <c>decode</c>: after BOS a leading space of the piece
    /// is dropped; a byte token <c>&lt;0xXX&gt;</c> stands for that byte; GPT-2 tokens print as they are). A token that is only part of a UTF-8 character gives U+FFFD here;
    /// write <see cref="DecodeTokenBytes"/> to a byte stream to reproduce the reference output exactly.
    /// </summary>
    string DecodeToken(int previousId, int id);

    /// <summary>The raw bytes behind <see cref="DecodeToken"/>, exactly as the reference implementation writes them.</summary>
    byte[] DecodeTokenBytes(int previousId, int id);

    /// <summary>A human-readable form of one token for displays (bytes that are not valid UTF-8 shown as <c>&lt;0xXX&gt;</c>).</summary>
    string TokenText(int id);
}
