using System.Reflection;
using System.Reflection.Emit;
using KeyValueLab.Tuning;
using TorchSharp;
using Xunit.Abstractions;

namespace KeyValueLab.Tests.Tuning;

/// <summary>
/// Guards the fix for "Unknown scalar type" mid-training (see <c>HeldScalars</c>): reads the IL of the code that runs every
/// step — model forwards, attention context, LoRA and NF4 hooks, the trainers, optimizer and clipping, generation, the editors'
/// optimisation loops and the evaluation — and fails
/// on any temporary <see cref="Scalar"/>: a number converted to a Scalar and passed straight on (not stored in a local or
/// field), or a call of a TorchSharp method that makes one itself (found the same way in TorchSharp's IL, e.g.
/// <c>Tensor + Tensor</c>, <c>add(Scalar)</c>, <c>square()</c>, <c>Tensor * double</c>).
/// </summary>
public class TemporaryScalarTests(ITestOutputHelper output)
{
    /// <summary>
    /// Run once per command (loading, initialising, quantising, merging) or once per edit (the closed-form updates), not per step.
    /// SecondMoments runs per statistics batch but is exempt for now: branch lifelong is rewriting it (.npz statistics); its
    /// Scalars are to be held after that merge.
    /// </summary>
    private static readonly HashSet<string> OncePerCommand =
    [
        "KeyValueLab.Editing.MemitEditor.UpdateLayer",
        "KeyValueLab.Editing.LocateEditorBase.RankOne",
        "KeyValueLab.Editing.TargetVector.get_Target",
        "KeyValueLab.Editing.SecondMoments.Compute",
        "KeyValueLab.Editing.SecondMoments.RunGenerated",
        "KeyValueLab.Models.ModelLoader.Create",
        "KeyValueLab.Tuning.LoraModel.Attach",
        "KeyValueLab.Tuning.LoraModel.AddDelta",
        "KeyValueLab.Tuning.Nf4Tensor.Quantize",
        "KeyValueLab.Tuning.Nf4Tensor.QuantizeBlocks",
    ];

    private static readonly string[] PerStepNamespaces = ["KeyValueLab.Models", "KeyValueLab.Tuning", "KeyValueLab.Inference", "KeyValueLab.Organism", "KeyValueLab.Editing", "KeyValueLab.Evaluation"];

    private const BindingFlags Declared = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    private static readonly Dictionary<short, OpCode> OpCodesByValue = typeof(OpCodes)
        .GetFields(BindingFlags.Public | BindingFlags.Static).Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    private static readonly HashSet<short> Stores =
        [OpCodes.Stloc_0.Value, OpCodes.Stloc_1.Value, OpCodes.Stloc_2.Value, OpCodes.Stloc_3.Value, OpCodes.Stloc_S.Value,
         OpCodes.Stloc.Value, OpCodes.Stfld.Value, OpCodes.Stsfld.Value];

    /// <summary>Each call in <paramref name="method"/>'s IL with the opcode right after it.</summary>
    private static IEnumerable<(MethodBase Callee, short Next)> Calls(MethodBase method)
    {
        byte[]? il;
        try { il = method.GetMethodBody()?.GetILAsByteArray(); } catch (Exception e) when (e is BadImageFormatException or InvalidOperationException) { il = null; }
        if (il is null) yield break;
        Type[]? typeArgs = method.DeclaringType is { IsGenericType: true } t ? t.GetGenericArguments() : null;
        Type[]? methodArgs = method.IsGenericMethod ? method.GetGenericArguments() : null;
        int i = 0;
        while (i < il.Length)
        {
            short value = il[i++];
            if (value == 0xFE) value = (short)(0xFE00 | il[i++]);
            if (!OpCodesByValue.TryGetValue(value, out var op)) yield break;
            int size = op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, i),
                _ => 4,
            };
            MethodBase? callee = null;
            if (op.OperandType == OperandType.InlineMethod)
            {
                try { callee = method.Module.ResolveMethod(BitConverter.ToInt32(il, i), typeArgs, methodArgs); }
                catch (Exception e) when (e is ArgumentException or BadImageFormatException or TypeLoadException or MissingMemberException) { }
            }
            i += size;
            if (callee is null) continue;
            short next = i >= il.Length ? (short)0 : il[i] == 0xFE && i + 1 < il.Length ? (short)(0xFE00 | il[i + 1]) : il[i];
            yield return (callee, next);
        }
    }

    private static bool MakesScalar(MethodBase m) =>
        (m.DeclaringType == typeof(Scalar) && m.Name == "op_Implicit") || (m.Name == "ToScalar" && m.IsStatic && m.DeclaringType?.Assembly == typeof(Scalar).Assembly);

    private static IEnumerable<MethodBase> MethodsOf(Type type) =>
        type.GetMethods(Declared).Cast<MethodBase>().Concat(type.GetConstructors(Declared));

    private static Type[] TypesOf(Assembly assembly)
    {
        try { return assembly.GetTypes(); }
        catch (ReflectionTypeLoadException e) { return [.. e.Types.OfType<Type>()]; }
    }

    /// <summary>TorchSharp methods that pass a Scalar they convert on without holding it, directly or through such a method.</summary>
    private static HashSet<MethodBase> TorchSharpMethodsMakingTemporaries()
    {
        var all = TypesOf(typeof(Scalar).Assembly).Where(t => t != typeof(Scalar)).SelectMany(MethodsOf).Where(m => m.Name != "ToScalar").ToList();
        var calls = all.ToDictionary(m => m, m => Calls(m).ToList());
        var result = all.Where(m => calls[m].Any(c => MakesScalar(c.Callee) && !Stores.Contains(c.Next))).ToHashSet();
        for (bool grew = true; grew;)
        {
            var more = all.Where(m => !result.Contains(m) && calls[m].Any(c => result.Contains(c.Callee))).ToList();
            result.UnionWith(more);
            grew = more.Count > 0;
        }
        return result;
    }

    private static string Name(MethodBase m) => $"{m.DeclaringType?.Name}.{m.Name}({string.Join(", ", m.GetParameters().Select(p => p.ParameterType.Name))})";

    [Fact]
    public void PerStepCodeMakesNoTemporaryScalars()
    {
        var temporaries = TorchSharpMethodsMakingTemporaries();
        Assert.Contains(temporaries, m => m.Name == "op_Addition" && m.GetParameters().All(p => p.ParameterType == typeof(torch.Tensor)));  // the audit sees a + b

        var ours = TypesOf(typeof(SftTrainer).Assembly)
            .Where(t => PerStepNamespaces.Any(n => t.Namespace == n || (t.Namespace ?? "").StartsWith(n + ".", StringComparison.Ordinal)) || t == typeof(HeldScalars))
            .ToList();
        var found = new List<string>();
        int methods = 0;
        foreach (var type in ours)
        {
            // Lambdas and local functions live in nested compiler types; charge them to the outermost declared type.
            var outer = type;
            while (outer.DeclaringType is not null) outer = outer.DeclaringType;
            foreach (var method in MethodsOf(type))
            {
                string owner = $"{outer.FullName}.{(type == outer ? method.Name : OwnerOfLambda(method.Name))}";
                if (OncePerCommand.Contains(owner)) continue;
                methods++;
                foreach (var (callee, next) in Calls(method))
                {
                    if (MakesScalar(callee) && !Stores.Contains(next)) found.Add($"{type.FullName}::{method.Name}: temporary {Name(callee)}");
                    else if (temporaries.Contains(callee)) found.Add($"{type.FullName}::{method.Name}: {Name(callee)} makes a temporary Scalar");
                }
            }
        }
        output.WriteLine($"{methods} methods in {ours.Count} types read; {temporaries.Count} TorchSharp methods make temporaries");
        foreach (var f in found) output.WriteLine(f);
        Assert.True(found.Count == 0, string.Join(Environment.NewLine, found));
    }

    /// <summary><c>&lt;Hook&gt;b__0</c> → <c>Hook</c>: the method a compiler-generated lambda was written in.</summary>
    private static string OwnerOfLambda(string name) =>
        name.StartsWith('<') && name.IndexOf('>') is int end and > 1 ? name[1..end] : name;
}
