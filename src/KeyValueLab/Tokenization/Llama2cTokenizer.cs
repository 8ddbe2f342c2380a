using System.Buffers.Binary;
using System.Text;

namespace KeyValueLab.Tokenization;

/// <summary>
/// llama2.c's <c>tokenizer.bin</c>: int32 max_token_length, then per token float32 score, int32 length and the
/// piece's bytes. Encoding is run.c's <c>encode</c> exactly: BOS, a dummy-prefix " " for non-empty text, one
/// token per UTF-8 character (or its bytes + 3 when the character is not in the vocabulary), then the
/// best-scoring adjacent pair is merged until none is in the vocabulary. BOS is 1, EOS is 2.
/// </summary>
public sealed class Llama2cTokenizer : ITokenizer
{
    private const int Bos = 1, Eos = 2, ByteOffset = 3;

    private readonly string _source;
    private readonly byte[][] _pieces;
    private readonly float[] _scores;
    private readonly string[] _keys;                    // pieces as Latin-1 strings: byte-exact dictionary keys
    private readonly Dictionary<string, int> _lookup;   // piece → id (lowest id when a piece repeats)
    private readonly int _space;                        // id of " ", the dummy prefix; -1 if absent

    /// <inheritdoc/>
    public int VocabSize => _pieces.Length;

    /// <inheritdoc/>
    public int? BosId => Bos;

    /// <inheritdoc/>
    public int? EosId => Eos;

    /// <summary>The header's max_token_length (bytes of the longest piece).</summary>
    public int MaxTokenLength { get; }

    /// <summary>The bytes of a token's piece as the file holds them.</summary>
    internal byte[] PieceBytes(int id) => _pieces[CheckId(id)];

    /// <summary>Merge score of a token (higher merges first).</summary>
    public float Score(int id) => _scores[CheckId(id)];

    private Llama2cTokenizer(string source, int maxTokenLength, byte[][] pieces, float[] scores)
    {
        _source = source;
        MaxTokenLength = maxTokenLength;
        _pieces = pieces;
        _scores = scores;
        _keys = new string[pieces.Length];
        _lookup = new Dictionary<string, int>(pieces.Length, StringComparer.Ordinal);
        for (int i = 0; i < pieces.Length; i++)
        {
            _keys[i] = Encoding.Latin1.GetString(pieces[i]);
            _lookup.TryAdd(_keys[i], i);
        }
        _space = _lookup.GetValueOrDefault(" ", -1);
    }

    /// <summary>
    /// Reads a <c>tokenizer.bin</c>. run.c reads exactly the checkpoint's vocabulary size; pass it as
    /// <paramref name="vocabSize"/> to do the same, or leave it null to read every token in the file.
    /// </summary>
    /// <exception cref="InputException">The file is missing, truncated or implausible.</exception>
    public static Llama2cTokenizer FromFile(string path, int? vocabSize = null)
    {
        byte[] data;
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists) throw new InputException(path, "no such file");
            if (info.Length > 1L << 30) throw new InputException(path, $"{info.Length} bytes is too large for a llama2.c tokenizer");
            data = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new InputException(path, "cannot read: " + e.Message, e); }

        if (data.Length < 4) throw new InputException(path, "truncated: shorter than the 4-byte max_token_length header");
        int maxLen = BinaryPrimitives.ReadInt32LittleEndian(data);
        if (maxLen <= 0 || maxLen > 1 << 16)
            throw new InputException(path, $"max_token_length {maxLen} is not plausible; not a llama2.c tokenizer.bin?");

        var pieces = new List<byte[]>();
        var scores = new List<float>();
        int offset = 4;
        while (vocabSize is int n ? pieces.Count < n : offset < data.Length)
        {
            int i = pieces.Count;
            if (offset + 8 > data.Length)
                throw new InputException(path, vocabSize is int want && offset == data.Length
                    ? $"has {i} tokens but {want} are needed"
                    : $"truncated inside token {i} (at byte {offset} of {data.Length})");
            float score = BinaryPrimitives.ReadSingleLittleEndian(data.AsSpan(offset));
            int len = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(offset + 4));
            offset += 8;
            if (len < 0 || len > maxLen)
                throw new InputException(path, $"token {i} has length {len}, outside 0..{maxLen} (max_token_length)");
            if (offset + len > data.Length)
                throw new InputException(path, $"truncated inside token {i} (needs {len} bytes at byte {offset} of {data.Length})");
            pieces.Add(data.AsSpan(offset, len).ToArray());
            scores.Add(score);
            offset += len;
        }
        if (pieces.Count <= Eos) throw new InputException(path, $"has {pieces.Count} tokens; llama2.c needs at least <unk>, BOS and EOS");
        return new Llama2cTokenizer(path, maxLen, pieces.ToArray(), scores.ToArray());
    }

    /// <summary>run.c <c>encode(text, bos, eos=0)</c>.</summary>
    public IReadOnlyList<int> Encode(string text, bool addBos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        var tokens = new List<int>(bytes.Length + 2);
        if (addBos) tokens.Add(Bos);
        if (bytes.Length > 0)
        {
            if (_space < 0) throw new InputException(_source, "the vocabulary has no \" \" token, which llama2.c uses as the dummy prefix");
            tokens.Add(_space);
        }

        // One token per UTF-8 character: a lead byte and up to three continuation bytes, as run.c groups them.
        int start = 0, length = 0;
        for (int c = 0; c < bytes.Length; c++)
        {
            if ((bytes[c] & 0xC0) != 0x80) { start = c; length = 0; }
            length++;
            if (c + 1 < bytes.Length && (bytes[c + 1] & 0xC0) == 0x80 && length < 4) continue;
            if (_lookup.TryGetValue(Encoding.Latin1.GetString(bytes, start, length), out int id)) tokens.Add(id);
            else
            {
                for (int k = start; k < start + length; k++)
                {
                    int byteId = bytes[k] + ByteOffset;
                    if (byteId >= _pieces.Length) throw new InputException(_source, $"the vocabulary ({_pieces.Length} tokens) has no byte token for 0x{bytes[k]:X2}");
                    tokens.Add(byteId);
                }
            }
            start = c + 1;
            length = 0;
        }

        MergeGreedily(tokens);
        return tokens;
    }

    /// <summary>
    /// Repeatedly merges the adjacent pair whose concatenation is the best-scoring vocabulary entry (leftmost on
    /// ties, never at or below -1e10), as run.c does, in O(n log n) (<see cref="PairMerge"/>).
    /// </summary>
    private void MergeGreedily(List<int> tokens)
    {
        var merged = PairMerge.Run([.. tokens], (left, right) => PairId(left, right) is int id and not -1 && _scores[id] > -1e10f ? (id, _scores[id]) : null,
            Comparer<(float Score, int Left)>.Create((a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Left.CompareTo(b.Left)));
        tokens.Clear();
        tokens.AddRange(merged);
    }

    private int PairId(int left, int right) => _lookup.GetValueOrDefault(string.Concat(_keys[left], _keys[right]), -1);

    /// <summary>The text of a sequence: BOS/EOS print nothing and the first piece's leading space is dropped (as after BOS).</summary>
    public string Decode(IEnumerable<int> ids) => LlamaPieces.Decode(_pieces, Bos, Eos, ids);

    /// <inheritdoc/>
    public string DecodeToken(int previousId, int id) => TokenBytes.ToText(DecodeTokenBytes(previousId, id));

    /// <inheritdoc/>
    public byte[] DecodeTokenBytes(int previousId, int id) => LlamaPieces.DecodeToken(_pieces, Bos, previousId, id);

    /// <summary>The stored piece (e.g. " Once", "&lt;0x0A&gt;", "\n&lt;s&gt;\n").</summary>
    public string TokenText(int id) => TokenBytes.ToDisplay(_pieces[CheckId(id)]);

    /// <summary>
    /// run.c <c>safe_printf</c>: whether llama2.c writes a decoded piece at all. It skips empty pieces and a
    /// lone byte that is neither printable ASCII nor whitespace (so raw UTF-8 byte tokens never reach its stdout).
    /// A generator that must match llama2.c's output byte for byte writes only the pieces this accepts.
    /// </summary>
    public static bool IsPrintedByRunC(ReadOnlySpan<byte> piece) =>
        piece.Length > 1 || (piece.Length == 1 && (piece[0] is >= 0x20 and <= 0x7E || piece[0] is (byte)' ' or >= 0x09 and <= 0x0D));

    private int CheckId(int id) =>
        (uint)id < (uint)_pieces.Length ? id : throw new ArgumentOutOfRangeException(nameof(id), id, $"token id outside 0..{_pieces.Length - 1}");
}
