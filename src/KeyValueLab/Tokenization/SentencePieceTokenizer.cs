using System.Text;
using Microsoft.ML.Tokenizers;
using MlSentencePiece = Microsoft.ML.Tokenizers.SentencePieceTokenizer;

namespace KeyValueLab.Tokenization;

/// <summary>
/// Llama (1 and 2) SentencePiece BPE from a <c>tokenizer.model</c> protobuf, read by Microsoft.ML.Tokenizers'
/// <see cref="LlamaTokenizer"/> and encoded by <see cref="SentencePieceBpe"/> (dummy-prefix space, '▁' for spaces,
/// byte fallback; SentencePiece's tie-breaking, which the library does not follow). Streaming decode
/// (<see cref="DecodeToken"/>) follows llama2.c, so it prints what llama2.c prints for the same vocabulary.
/// </summary>
public sealed class SentencePieceTokenizer : ITokenizer
{
    private readonly SentencePieceBpe _bpe;
    private readonly byte[][] _pieces;   // [id] → llama2.c piece bytes ('▁' → ' ', BOS/EOS as llama2.c exports them)
    private readonly string[] _display;  // [id] → piece with '▁' → ' '

    /// <inheritdoc/>
    public int VocabSize => _pieces.Length;

    /// <inheritdoc/>
    public int? BosId { get; }

    /// <inheritdoc/>
    public int? EosId { get; }

    /// <summary>The model's unknown-token id (0 in Llama).</summary>
    public int UnknownId { get; }

    /// <summary>Every piece with its score and type, by id, as the model file holds them.</summary>
    internal IReadOnlyList<SentencePiece> Pieces { get; }

    /// <summary>Whether text gets a leading "▁" before encoding (the model's add_dummy_prefix).</summary>
    internal bool AddDummyPrefix => _bpe.AddDummyPrefix;

    private SentencePieceTokenizer(MlSentencePiece sp, SentencePiece[] pieces)
    {
        Pieces = pieces;
        _bpe = new SentencePieceBpe(pieces, sp.UnknownId, sp.AddDummyPrefix, sp.ByteFallback);
        int size = sp.Vocabulary.Values.Max() + 1;
        _pieces = new byte[size][];
        _display = new string[size];
        Array.Fill(_pieces, Array.Empty<byte>());
        Array.Fill(_display, "");
        BosId = sp.BeginningOfSentenceId >= 0 ? sp.BeginningOfSentenceId : null;
        EosId = sp.EndOfSentenceId >= 0 ? sp.EndOfSentenceId : null;
        UnknownId = sp.UnknownId;
        foreach (var (piece, id) in sp.Vocabulary)
        {
            _display[id] = piece.Replace('▁', ' ');
            string exported = id == BosId ? "\n<s>\n" : id == EosId ? "\n</s>\n" : _display[id];
            _pieces[id] = Encoding.UTF8.GetBytes(exported);
        }
    }

    /// <summary>Loads a SentencePiece BPE <c>tokenizer.model</c>.</summary>
    /// <exception cref="InputException">The file is missing or is not a SentencePiece BPE model.</exception>
    public static SentencePieceTokenizer FromFile(string path)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new InputException(path, "cannot read: " + e.Message, e); }
        if (bytes.Length == 0) throw new InputException(path, "empty file; expected a SentencePiece model (protobuf)");
        return FromModelBytes(path, bytes);
    }

    /// <summary>A SentencePiece BPE model from its serialised ModelProto; <paramref name="source"/> names it in errors.</summary>
    internal static SentencePieceTokenizer FromModelBytes(string source, byte[] bytes)
    {
        MlSentencePiece sp;
        SentencePiece[] pieces;
        try
        {
            using var stream = new MemoryStream(bytes, writable: false);
            sp = LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
            pieces = SentencePieceModelProto.ReadPieces(bytes);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InputException(source, "not a SentencePiece BPE model: " + e.Message, e);
        }
        if (sp.Vocabulary.Count == 0) throw new InputException(source, "SentencePiece model has no pieces");
        return new SentencePieceTokenizer(sp, pieces);
    }

    /// <summary>SentencePiece ids of <paramref name="text"/> (dummy prefix included for non-empty text), BOS first if asked.</summary>
    public IReadOnlyList<int> Encode(string text, bool addBos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = _bpe.Encode(text);
        if (!addBos || BosId is not int bos) return ids;
        var withBos = new List<int>(ids.Count + 1) { bos };
        withBos.AddRange(ids);
        return withBos;
    }

    /// <summary>The text of a sequence: BOS/EOS print nothing and the first piece's dummy-prefix space is dropped.</summary>
    public string Decode(IEnumerable<int> ids) => LlamaPieces.Decode(_pieces, BosId ?? -1, EosId ?? -1, ids);

    /// <inheritdoc/>
    public string DecodeToken(int previousId, int id) => TokenBytes.ToText(DecodeTokenBytes(previousId, id));

    /// <inheritdoc/>
    public byte[] DecodeTokenBytes(int previousId, int id) => LlamaPieces.DecodeToken(_pieces, BosId ?? -1, previousId, id);

    /// <summary>The piece with '▁' shown as a space; byte tokens stay "&lt;0xXX&gt;", control tokens "&lt;s&gt;".</summary>
    public string TokenText(int id)
    {
        if ((uint)id >= (uint)_display.Length) throw new ArgumentOutOfRangeException(nameof(id), id, $"token id outside 0..{_display.Length - 1}");
        return _display[id];
    }
}
