namespace KeyValueLab.Tokenization;

/// <summary>
/// The greedy pair-merge loop that BPE tokenizers share: repeatedly merge the adjacent pair that ranks first, with the
/// leftmost pair winning ties. A rescan after every merge is quadratic (run.c: 5.6 s for 100 KB); here the candidate
/// pairs wait in a priority queue over a linked list of tokens, so each merge costs O(log n): the same merges in the
/// same order, O(n log n) in all.
/// </summary>
internal static class PairMerge
{
    /// <summary>
    /// Merges <paramref name="token"/> (ids, changed in place) and returns the ids that remain, in order.
    /// <paramref name="lookup"/> gives the merged id of a pair and its rank key, or null when the pair does not merge;
    /// <paramref name="order"/> orders (key, left position) so that the pair to merge first comes first.
    /// </summary>
    public static List<int> Run<TKey>(int[] token, Func<int, int, (int Merged, TKey Key)?> lookup, IComparer<(TKey Key, int Left)> order)
    {
        int n = token.Length;
        var next = new int[n];
        var prev = new int[n];
        for (int i = 0; i < n; i++) (prev[i], next[i]) = (i - 1, i + 1 < n ? i + 1 : -1);
        // A node keeps its index in the original order, so the smaller left index is the leftmost pair.
        var agenda = new PriorityQueue<(int Left, int Right, int LeftToken, int RightToken, int Merged), (TKey Key, int Left)>(order);
        void Consider(int left, int right)
        {
            if (left >= 0 && right >= 0 && lookup(token[left], token[right]) is { } m)
                agenda.Enqueue((left, right, token[left], token[right], m.Merged), (m.Key, left));
        }
        for (int i = 0; i + 1 < n; i++) Consider(i, i + 1);
        while (agenda.TryDequeue(out var pair, out _))
        {
            // Stale: the two are no longer neighbours, or one of them has been merged since.
            if (next[pair.Left] != pair.Right || token[pair.Left] != pair.LeftToken || token[pair.Right] != pair.RightToken) continue;
            token[pair.Left] = pair.Merged;
            token[pair.Right] = -1;
            next[pair.Left] = next[pair.Right];
            if (next[pair.Right] >= 0) prev[next[pair.Right]] = pair.Left;
            next[pair.Right] = -1;
            Consider(prev[pair.Left], pair.Left);
            Consider(pair.Left, next[pair.Left]);
        }
        var ids = new List<int>();
        for (int i = 0; i >= 0 && i < n; i = next[i]) ids.Add(token[i]);
        return ids;
    }
}
