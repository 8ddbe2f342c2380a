using System.Runtime.CompilerServices;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace KeyValueLab.Models;

/// <summary>
/// A frozen linear weight <c>[out, in]</c> kept in a form other than fp32 (its stored BF16/F16 bytes, or NF4) and widened
/// to fp32 only while a matmul needs it.
/// </summary>
public interface IFrozenWeight : IDisposable
{
    /// <summary><c>[out, in]</c>.</summary>
    long[] Shape { get; }

    /// <summary>Bytes it holds resident.</summary>
    long Bytes { get; }

    /// <summary>Rows widened at a time; <see cref="Widen"/> is asked for row ranges of at most this many rows.</summary>
    long BlockRows { get; }

    /// <summary>Rows <c>[start, start + count)</c> as a new fp32 tensor <c>[count, in]</c> on the weight's device.</summary>
    Tensor Widen(long start, long count);

    /// <summary>
    /// Rows <c>[start, start + destination.shape[0])</c> written into <paramref name="destination"/> (fp32 <c>[count, in]</c>),
    /// so that a caller widening block after block reuses one buffer instead of allocating each block anew.
    /// </summary>
    void WidenInto(long start, Tensor destination)
    {
        using var block = Widen(start, destination.shape[0]);
        destination.copy_(block);
    }
}

/// <summary>A weight kept in its stored BF16 or F16 bytes (possibly a view of a memory-mapped file); widened block by block.</summary>
public sealed class StoredWeight : IFrozenWeight
{
    /// <summary>
    /// Largest fp32 block widened at once (4 MiB): small enough to stay in the last-level cache between widening and the
    /// matmul that reads it, large enough (≥ 256 rows for d ≤ 4096) that each block's matmul still runs at the full rate.
    /// </summary>
    public const long BlockBytes = 4 << 20;

    public StoredWeight(Tensor stored)
    {
        if (stored.dim() != 2) throw new ArgumentException($"a linear weight is [out, in], got [{string.Join(", ", stored.shape)}]", nameof(stored));
        if (stored.dtype is not (ScalarType.BFloat16 or ScalarType.Float16))
            throw new ArgumentException($"stored weights are BF16 or F16, got {stored.dtype}", nameof(stored));
        Stored = stored.DetachFromDisposeScope();
        Shape = stored.shape;
    }

    /// <summary>The weight as stored (do not modify).</summary>
    public Tensor Stored { get; }

    public long[] Shape { get; }

    public long Bytes => Stored.NumberOfElements * Stored.ElementSize;

    public long BlockRows => Math.Max(1, BlockBytes / (4 * Math.Max(1, Shape[1])));

    public Tensor Widen(long start, long count) => Stored.narrow(0, start, count).to(ScalarType.Float32);

    public void WidenInto(long start, Tensor destination)
    {
        using var rows = Stored.narrow(0, start, destination.shape[0]);
        destination.copy_(rows);  // copy_ converts BF16/F16 to fp32 in place
    }

    public void Dispose() => Stored.Dispose();
}

/// <summary>
/// Swaps the weight of any <c>nn.Linear</c> for an <see cref="IFrozenWeight"/> without touching the architecture that owns
/// it: the weight parameter becomes a zero-width placeholder <c>[out, 0]</c>, a forward pre-hook keeps the real input and hands
/// the linear a zero-width view of it (so nn.Linear computes only its bias), and a forward hook adds x·Wᵀ through
/// <see cref="FrozenLinearFunction"/>, which widens W again in the backward pass rather than keeping an fp32 copy alive
/// (bitsandbytes' <c>MatMul4Bit</c> does the same). Used for weights kept as stored (BF16/F16) and for the NF4 base.
/// </summary>
/// <remarks>
/// Hooks registered later on a frozen linear see the zero-width view as its input: they read the real one with
/// <see cref="Input"/>. <see cref="MakeMaster"/> turns a frozen linear back into a plain one with an fp32 weight (what an
/// editor changes).
/// </remarks>
public static class FrozenLinear
{
    private sealed class State(IFrozenWeight weight, Action unhook)
    {
        public IFrozenWeight Weight = weight;
        public Tensor? Input;
        public readonly Action Unhook = unhook;
    }

    private static readonly ConditionalWeakTable<Linear, State> States = new();

    /// <summary>
    /// Freezes <paramref name="linear"/> with <paramref name="weight"/> (owned from now on); its fp32 weight is released. The
    /// placeholder goes to <paramref name="device"/> (default: where the old weight was).
    /// </summary>
    public static void Freeze(Linear linear, IFrozenWeight weight, Device? device = null)
    {
        if (States.TryGetValue(linear, out _)) throw new InvalidOperationException("the linear is already frozen");
        var old = linear.weight;
        if (!old.shape.SequenceEqual(weight.Shape))
            throw new ArgumentException($"the weight is [{string.Join(", ", weight.Shape)}], the linear [{string.Join(", ", old.shape)}]", nameof(weight));
        linear.weight = new Parameter(empty([weight.Shape[0], 0], ScalarType.Float32, device ?? old.device), requires_grad: false);  // disposes old
        var before = linear.register_forward_pre_hook((m, x) =>
        {
            States.TryGetValue((Linear)m, out var s);
            s!.Input = x;
            return x.narrow(-1, 0, 0);  // [.., 0]: nn.Linear then yields just its bias
        });
        var after = linear.register_forward_hook((m, _, y) =>
        {
            States.TryGetValue((Linear)m, out var s);
            return y.Plus(FrozenLinearFunction.Apply(s!.Input!, s.Weight));  // [.., out]; held alpha (see HeldScalars)
        });
        States.Add(linear, new State(weight, () => { before.remove(); after.remove(); }));
    }

    /// <summary>The frozen weight behind <paramref name="linear"/>, or null for a plain linear.</summary>
    public static IFrozenWeight? Of(Linear linear) => States.TryGetValue(linear, out var s) ? s.Weight : null;

    /// <summary>The input of the current call of a frozen linear (its later hooks see a zero-width view), or null.</summary>
    public static Tensor? InputOf(Linear linear) => States.TryGetValue(linear, out var s) ? s.Input : null;

    /// <summary>The real input of <paramref name="linear"/> for a hook that was handed <paramref name="x"/>.</summary>
    public static Tensor Input(Linear linear, Tensor x) => x.shape[^1] == 0 && InputOf(linear) is Tensor real ? real : x;

    /// <summary><c>[out, in]</c> whether frozen or not.</summary>
    public static long[] WeightShape(Linear linear) => Of(linear)?.Shape ?? linear.weight.shape;

    /// <summary>Bytes the weight holds (frozen: what it keeps resident; plain: its fp32 parameter).</summary>
    public static long WeightBytes(Linear linear) => Of(linear)?.Bytes ?? linear.weight.NumberOfElements * linear.weight.ElementSize;

    /// <summary>The fp32 weight <c>[out, in]</c> as a new tensor: widened when frozen, else a copy.</summary>
    public static Tensor Weight(Linear linear)
    {
        var w = Of(linear);
        if (w is null) return linear.weight.detach().clone();
        using var noGrad = no_grad();
        return w.Widen(0, w.Shape[0]);
    }

    /// <summary>Replaces the frozen weight of a frozen linear (the old one is disposed).</summary>
    public static void Replace(Linear linear, IFrozenWeight weight)
    {
        if (!States.TryGetValue(linear, out var s)) throw new InvalidOperationException("the linear is not frozen");
        var old = s.Weight;
        s.Weight = weight;
        old.Dispose();
    }

    /// <summary>
    /// Makes <paramref name="linear"/> a plain linear again with its weight widened to an fp32 parameter (a master copy an
    /// editor or optimiser can change in place), and returns that live parameter. A plain linear is returned as it is.
    /// </summary>
    public static Parameter MakeMaster(Linear linear)
    {
        if (!States.TryGetValue(linear, out var s)) return linear.weight;
        bool grad = linear.weight.requires_grad;
        var fp32 = Weight(linear);
        s.Unhook();
        States.Remove(linear);
        s.Weight.Dispose();
        linear.weight = new Parameter(fp32, requires_grad: grad);
        return linear.weight;
    }

    /// <summary>Releases the frozen weights of every linear in <paramref name="module"/> now (before the module is disposed).</summary>
    public static void DisposeAll(nn.Module module)
    {
        foreach (var (_, linear) in FrozenIn(module).ToList()) Release(linear);
    }

    /// <summary>Unhooks <paramref name="linear"/> and releases its frozen weight, if it has one (its placeholder stays).</summary>
    internal static void Release(Linear linear)
    {
        if (!States.TryGetValue(linear, out var s)) return;
        s.Unhook();
        States.Remove(linear);
        s.Weight.Dispose();
    }

    /// <summary>Every frozen linear of <paramref name="module"/> with its state-dict module name.</summary>
    public static IEnumerable<(string Name, Linear Linear)> FrozenIn(nn.Module module) =>
        module.named_modules().Where(m => m.module is Linear l && Of(l) is not null).Select(m => (m.name, (Linear)m.module));
}

/// <summary>
/// y = x·Wᵀ with W frozen in another form: the forward and the backward pass each widen W block by block (rows of at most
/// <see cref="IFrozenWeight.BlockRows"/>), so no fp32 copy of W outlives the call and none is kept for the backward pass.
/// </summary>
internal sealed class FrozenLinearFunction : autograd.SingleTensorFunction<FrozenLinearFunction>
{
    public override string Name => nameof(FrozenLinearFunction);

    /// <summary>x <c>[.., in]</c> → <c>[.., out]</c>.</summary>
    public static Tensor Apply(Tensor x, IFrozenWeight weight) =>
        !is_grad_enabled() || !x.requires_grad ? Multiply(x, weight) : apply(x, weight);

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, weight) = ((Tensor)vars[0], (IFrozenWeight)vars[1]);
        ctx.save_data("weight", weight);
        return Multiply(x, weight);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput) =>
        [MultiplyTransposed(gradOutput, (IFrozenWeight)ctx.get_data("weight")), null!];  // no gradient for the frozen weight

    /// <summary>x·Wᵀ, <c>[.., in]</c> → <c>[.., out]</c>.</summary>
    internal static Tensor Multiply(Tensor x, IFrozenWeight weight)
    {
        long outF = weight.Shape[0], block = weight.BlockRows;
        using var noGrad = no_grad();
        if (block >= outF)
        {
            using var w = weight.Widen(0, outF);
            return nn.functional.linear(x, w);
        }
        var y = empty([.. x.shape[..^1], outF], ScalarType.Float32, x.device);
        // One block-sized buffer for the whole call: allocating each block anew costs the kernel's page faults and zeroing
        // of a fresh mapping per block whenever the allocator returns blocks of this size to the kernel (MALLOC_MMAP_THRESHOLD_).
        using var buffer = empty([block, weight.Shape[1]], ScalarType.Float32, x.device);
        for (long start = 0; start < outF; start += block)
        {
            using var scope = NewDisposeScope();
            long n = Math.Min(block, outF - start);
            var w = buffer.narrow(0, 0, n);                         // [n, in]
            weight.WidenInto(start, w);
            y.narrow(-1, start, n).copy_(nn.functional.linear(x, w));  // [.., n]
        }
        return y;
    }

    /// <summary>g·W, <c>[.., out]</c> → <c>[.., in]</c>.</summary>
    internal static Tensor MultiplyTransposed(Tensor g, IFrozenWeight weight)
    {
        long outF = weight.Shape[0], block = weight.BlockRows;
        using var noGrad = no_grad();
        if (block >= outF)
        {
            using var w = weight.Widen(0, outF);
            return g.matmul(w);
        }
        Tensor? sum = null;
        using var buffer = empty([block, weight.Shape[1]], ScalarType.Float32, g.device);  // reused by every block (see Multiply)
        for (long start = 0; start < outF; start += block)
        {
            using var scope = NewDisposeScope();
            long n = Math.Min(block, outF - start);
            var w = buffer.narrow(0, 0, n);                              // [n, in]
            weight.WidenInto(start, w);
            var part = g.narrow(-1, start, n).matmul(w);               // [.., in]
            if (sum is null) sum = part.MoveToOuterDisposeScope();
            else sum.PlusInPlace(part);
        }
        return sum!;
    }
}
