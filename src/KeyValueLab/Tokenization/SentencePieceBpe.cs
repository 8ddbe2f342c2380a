using System.Text;

namespace KeyValueLab.Tokenization;

/// <summary>
/// SentencePiece's BPE encoding (sentencepiece bpe_model.cc, and llama.cpp's llm_tokenizer_spm): start from one
/// symbol per character, then repeatedly merge the adjacent pair whose concatenation is the highest-scoring piece,
/// the leftmost such pair when several score the same; symbols left that are not pieces fall back to their UTF-8
/// byte tokens <c>&lt;0xXX&gt;</c> (or the unknown id without byte fallback).
/// </summary>
/// <remarks>
/// Microsoft.ML.Tokenizers 2.0.1's SentencePiece BPE takes the rightmost of equally scored pairs instead, so in
/// Llama 2 "?!!!!!!!" (seven '!') becomes "▁?" "!!!" "!!" "!!" there (1577 21004 6824 6824) but "▁?" "!!" "!!" "!!!"
/// in SentencePiece and llama.cpp (1577 6824 6824 21004); 59 of the 3,000 generated strings of
/// SentencePieceAgreementTests differed that way. Encoding is therefore done here; the library still parses the
/// model file. User-defined pieces (Gemma's) are matched first, longest at each position, and never merged.
/// </remarks>
internal sealed class SentencePieceBpe
{
    private readonly Dictionary<string, (int Id, float Score)> _pieces;
    private readonly int[] _byteIds;   // [byte] → id of <0xXX>, or -1
    private readonly int _unknownId;
    private readonly bool _addDummyPrefix;
    private readonly string[] _userDefined;  // longest first: matched whole before BPE and never merged (Gemma's <start_of_turn>, …)

    public SentencePieceBpe(IReadOnlyList<SentencePiece> pieces, int unknownId, bool addDummyPrefix, bool byteFallback)
    {
        _pieces = new Dictionary<string, (int, float)>(pieces.Count, StringComparer.Ordinal);
        _byteIds = Enumerable.Repeat(-1, 256).ToArray();
        for (int id = 0; id < pieces.Count; id++)
        {
            var p = pieces[id];
            if (p.Type == SentencePieceModelProto.Byte)
            {
                if (byteFallback && p.Piece.Length == 6 && p.Piece.StartsWith("<0x", StringComparison.Ordinal)
                    && byte.TryParse(p.Piece.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
                    _byteIds[b] = id;
                continue;
            }
            // Control and unknown pieces are never produced from text; unused ones are not merge targets.
            if (p.Type is SentencePieceModelProto.Normal or SentencePieceModelProto.UserDefined) _pieces.TryAdd(p.Piece, (id, p.Score));
        }
        _unknownId = unknownId;
        _addDummyPrefix = addDummyPrefix;
        _userDefined = [.. pieces.Where(p => p.Type == SentencePieceModelProto.UserDefined && p.Piece.Length > 0).Select(p => p.Piece)
            .Distinct(StringComparer.Ordinal).OrderByDescending(p => p.Length)];
    }

    /// <summary>Whether text is given a leading "▁" (add_dummy_prefix: Llama yes, Gemma no).</summary>
    public bool AddDummyPrefix => _addDummyPrefix;

    // The longest user-defined piece at text[at..], or 0 (sentencepiece's PrefixMatcher over user_defined_symbols).
    private int UserDefinedAt(string text, int at)
    {
        foreach (var u in _userDefined)
            if (at + u.Length <= text.Length && string.CompareOrdinal(text, at, u, 0, u.Length) == 0) return u.Length;
        return 0;
    }

    public List<int> Encode(string text)
    {
        var ids = new List<int>();
        if (text.Length == 0) return ids;
        string normalized = (_addDummyPrefix ? "\u2581" : "") + text.Replace(' ', '\u2581');

        // Symbols as a linked list over text ranges [start, start + length): one per character, or one per
        // user-defined piece found there (frozen: bpe_model.cc never merges it with a neighbour).
        var starts = new List<int>();
        var frozenAt = new HashSet<int>();
        for (int i = 0; i < normalized.Length;)
        {
            starts.Add(i);
            int user = _userDefined.Length == 0 ? 0 : UserDefinedAt(normalized, i);
            if (user > 0) frozenAt.Add(starts.Count - 1);
            i += user > 0 ? user : char.IsSurrogatePair(normalized, i) ? 2 : 1;
        }
        int n = starts.Count;
        var start = starts.ToArray();
        var length = new int[n];
        var prev = new int[n];
        var next = new int[n];
        for (int i = 0; i < n; i++)
        {
            length[i] = (i + 1 < n ? start[i + 1] : normalized.Length) - start[i];
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
        }

        // Highest score first; on equal scores the leftmost pair (smaller left symbol position).
        var agenda = new PriorityQueue<(int Left, int Right, int Length), (float Score, int Left)>(
            Comparer<(float Score, int Left)>.Create((a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Left.CompareTo(b.Left)));
        void TryAdd(int left, int right)
        {
            if (left < 0 || right < 0 || frozenAt.Contains(left) || frozenAt.Contains(right)) return;
            int len = length[left] + length[right];
            if (_pieces.TryGetValue(normalized.Substring(start[left], len), out var piece))
                agenda.Enqueue((left, right, len), (piece.Score, start[left]));
        }
        for (int i = 0; i + 1 < n; i++) TryAdd(i, i + 1);

        while (agenda.TryDequeue(out var pair, out _))
        {
            // Stale entries: one side already merged into something else.
            if (length[pair.Left] == 0 || length[pair.Right] == 0 || length[pair.Left] + length[pair.Right] != pair.Length) continue;
            length[pair.Left] += length[pair.Right];
            length[pair.Right] = 0;
            next[pair.Left] = next[pair.Right];
            if (next[pair.Right] >= 0) prev[next[pair.Right]] = pair.Left;
            TryAdd(prev[pair.Left], pair.Left);
            TryAdd(pair.Left, next[pair.Left]);
        }

        for (int i = 0; i >= 0; i = next[i])
        {
            string symbol = normalized.Substring(start[i], length[i]);
            if (_pieces.TryGetValue(symbol, out var piece)) { ids.Add(piece.Id); continue; }
            bool bytesKnown = true;
            foreach (byte b in Encoding.UTF8.GetBytes(symbol)) bytesKnown &= _byteIds[b] >= 0;
            if (bytesKnown) foreach (byte b in Encoding.UTF8.GetBytes(symbol)) ids.Add(_byteIds[b]);
            else ids.Add(_unknownId);
        }
        return ids;
    }
}
