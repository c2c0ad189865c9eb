package io.github.bigmodel.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A node of a model's module tree, kept in Java: named parameters, named buffers and named child modules, in
 * registration order. Dotted names are the keys of the PyTorch {@code state_dict} of the same model, so official
 * checkpoints load by name.
 *
 * <p>Traversal orders follow PyTorch: {@link #namedModules()} is pre-order with the root as {@code ""};
 * {@link #namedParameters()} lists each module's own parameters then its children's, each tensor once (a tied
 * tensor under its first name); {@link #stateDict()} lists every name, tied aliases included, with each module's
 * persistent buffers after its own parameters.
 *
 * <p>{@link #className()} is the name device maps match against no-split rules (a transformer block): by default
 * the Java simple class name, or the name given to {@link #Module(String)}.
 *
 * <pre>{@code
 * class Block extends Module {
 *     final Linear fc1 = registerModule("fc1", new Linear(64, 256, true, DType.FLOAT32));
 *     final Linear fc2 = registerModule("fc2", new Linear(256, 64, true, DType.FLOAT32));
 * }
 * Block b = new Block();                 // every parameter on meta: no memory used
 * b.namedParameters().keySet();          // [fc1.weight, fc1.bias, fc2.weight, fc2.bias]
 * }</pre>
 */
public class Module {

    private final String className;
    private final Map<String, Parameter> parameters = new LinkedHashMap<>();
    private final Map<String, Parameter> buffers = new LinkedHashMap<>();
    private final Set<String> nonPersistentBuffers = new HashSet<>();
    private final Map<String, Module> children = new LinkedHashMap<>();
    // Copy-on-write: forward passes read it without locking while hooks are added or removed rarely.
    private volatile List<ForwardHook> forwardHooks = List.of();
    private volatile UseGuard useGuard;

    /** A module whose class name is its Java simple name. */
    protected Module() {
        this.className = getClass().getSimpleName();
    }

    /** A module that reports {@code className} (for example the PyTorch class it mirrors). */
    public Module(String className) {
        if (className == null || className.isEmpty()) {
            throw new IllegalArgumentException("className must not be empty");
        }
        this.className = className;
    }

    /** The class name device maps match no-split rules against. */
    public String className() {
        return className;
    }

    /**
     * The class names ({@link #className()}) of modules in this model that must stay on one device: blocks whose
     * forward mixes tensors that a device boundary would separate (a residual, an attention's cache). The planner
     * uses them when the caller names none, as transformers reads a model's {@code _no_split_modules}. Empty by
     * default; a model overrides it.
     *
     * <pre>{@code
     * class MyModel extends Module {
     *     public Set<String> noSplitModuleClasses() { return Set.of("DecoderBlock"); }
     * }
     * }</pre>
     */
    public Set<String> noSplitModuleClasses() {
        return Set.of();
    }

    /** Adds a parameter under {@code name} and returns it. */
    public Parameter registerParameter(String name, Parameter parameter) {
        checkNewName(name);
        parameters.put(name, requireNonNull(parameter, name));
        return parameter;
    }

    /**
     * Whether the buffer {@code stateDictName} is computed by the model itself once its weights are placed (for
     * example a rotary table, made on the device its module executes on) rather than read from a checkpoint: memory
     * planning counts it on that execution device. None by default.
     */
    public boolean isComputedBuffer(String stateDictName) {
        return false;
    }

    /**
     * Removes a parameter that holds no values (a slot planned on meta that the model no longer needs, such as
     * the scales of a layer planned back to floating point).
     *
     * @throws IllegalStateException when the parameter holds values
     */
    protected final void removeParameter(String name) {
        Parameter p = parameters.get(name);
        if (p == null) {
            return;
        }
        if (p.isMaterialized()) {
            throw new IllegalStateException("'" + name + "' holds values and cannot be removed");
        }
        parameters.remove(name);
    }

    /**
     * Adds a buffer under {@code name}. A non-persistent buffer is part of the model's memory but not of its
     * {@code state_dict} (checkpoints do not hold it).
     */
    public Parameter registerBuffer(String name, Parameter buffer, boolean persistent) {
        checkNewName(name);
        buffers.put(name, requireNonNull(buffer, name));
        if (!persistent) {
            nonPersistentBuffers.add(name);
        }
        return buffer;
    }

    /** Adds a child module under {@code name} and returns it. */
    public <M extends Module> M registerModule(String name, M module) {
        checkNewName(name);
        if (module == this) {
            throw new IllegalArgumentException("A module cannot be its own child: " + name);
        }
        children.put(name, requireNonNull(module, name));
        return module;
    }

    private void checkNewName(String name) {
        if (name == null || name.isEmpty() || name.contains(".")) {
            throw new IllegalArgumentException("Invalid member name '" + name + "': must be non-empty without '.'");
        }
        if (parameters.containsKey(name) || buffers.containsKey(name) || children.containsKey(name)) {
            throw new IllegalArgumentException("'" + name + "' is already registered in " + className);
        }
    }

    private static <T> T requireNonNull(T value, String name) {
        if (value == null) {
            throw new IllegalArgumentException("'" + name + "' must not be null");
        }
        return value;
    }

    /** This module's own parameters, in registration order. */
    public Map<String, Parameter> parameters() {
        return Collections.unmodifiableMap(parameters);
    }

    /** This module's own buffers, in registration order. */
    public Map<String, Parameter> buffers() {
        return Collections.unmodifiableMap(buffers);
    }

    /** Whether this module's own buffer {@code name} is saved in checkpoints. */
    public boolean isPersistentBuffer(String name) {
        return buffers.containsKey(name) && !nonPersistentBuffers.contains(name);
    }

    /** This module's direct children, in registration order. */
    public Map<String, Module> children() {
        return Collections.unmodifiableMap(children);
    }

    /**
     * The module at a dotted path; {@code ""} is this module.
     *
     * @throws IllegalArgumentException naming the path when no such module exists
     */
    public Module module(String path) {
        Module m = findModule(path);
        if (m == null) {
            throw new IllegalArgumentException("No module named '" + path + "' in " + className);
        }
        return m;
    }

    /** The module at a dotted path, or null. */
    public Module findModule(String path) {
        if (path.isEmpty()) {
            return this;
        }
        Module m = this;
        for (String part : path.split("\\.", -1)) {
            m = m.children.get(part);
            if (m == null) {
                return null;
            }
        }
        return m;
    }

    /**
     * The parameter or buffer at a dotted path.
     *
     * @throws IllegalArgumentException naming the path when there is none
     */
    public Parameter tensor(String path) {
        Parameter p = findTensor(path);
        if (p == null) {
            throw new IllegalArgumentException("No parameter or buffer named '" + path + "' in " + className);
        }
        return p;
    }

    /** The parameter or buffer at a dotted path, or null. */
    public Parameter findTensor(String path) {
        int dot = path.lastIndexOf('.');
        Module owner = dot < 0 ? this : findModule(path.substring(0, dot));
        if (owner == null) {
            return null;
        }
        String leaf = path.substring(dot + 1);
        Parameter p = owner.parameters.get(leaf);
        return p != null ? p : owner.buffers.get(leaf);
    }

    /** Every module below and including this one, pre-order, the root named {@code ""}. */
    public Map<String, Module> namedModules() {
        Map<String, Module> out = new LinkedHashMap<>();
        collectModules("", out);
        return out;
    }

    private void collectModules(String prefix, Map<String, Module> out) {
        out.put(prefix, this);
        for (Map.Entry<String, Module> e : children.entrySet()) {
            e.getValue().collectModules(join(prefix, e.getKey()), out);
        }
    }

    /** Every distinct parameter under its first dotted name, PyTorch's {@code named_parameters()} order. */
    public Map<String, Parameter> namedParameters() {
        Map<String, Parameter> out = new LinkedHashMap<>();
        Set<Parameter> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        for (Map.Entry<String, Module> m : namedModules().entrySet()) {
            for (Map.Entry<String, Parameter> p : m.getValue().parameters.entrySet()) {
                if (seen.add(p.getValue())) {
                    out.put(join(m.getKey(), p.getKey()), p.getValue());
                }
            }
        }
        return out;
    }

    /** Every distinct buffer (persistent or not) under its first dotted name. */
    public Map<String, Parameter> namedBuffers() {
        Map<String, Parameter> out = new LinkedHashMap<>();
        Set<Parameter> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        for (Map.Entry<String, Module> m : namedModules().entrySet()) {
            for (Map.Entry<String, Parameter> b : m.getValue().buffers.entrySet()) {
                if (seen.add(b.getValue())) {
                    out.put(join(m.getKey(), b.getKey()), b.getValue());
                }
            }
        }
        return out;
    }

    /**
     * Every name a checkpoint of this model holds: all parameters (tied aliases included) and persistent buffers,
     * in PyTorch's {@code state_dict()} order.
     */
    public Map<String, Parameter> stateDict() {
        Map<String, Parameter> out = new LinkedHashMap<>();
        collectStateDict("", out);
        return out;
    }

    private void collectStateDict(String prefix, Map<String, Parameter> out) {
        parameters.forEach((k, v) -> out.put(join(prefix, k), v));
        buffers.forEach((k, v) -> {
            if (!nonPersistentBuffers.contains(k)) {
                out.put(join(prefix, k), v);
            }
        });
        children.forEach((k, v) -> v.collectStateDict(join(prefix, k), out));
    }

    /**
     * Makes the parameter at {@code alias} the same object as the one at {@code owner} (one tensor, two names),
     * as PyTorch models tie an output layer to the embedding. Shapes must agree.
     */
    public void tie(String alias, String owner) {
        Parameter ownerParam = tensor(owner);
        int dot = alias.lastIndexOf('.');
        Module aliasModule = dot < 0 ? this : module(alias.substring(0, dot));
        String leaf = alias.substring(dot + 1);
        Parameter old = aliasModule.parameters.get(leaf);
        if (old == null) {
            throw new IllegalArgumentException("No parameter named '" + alias + "' to tie");
        }
        if (!java.util.Arrays.equals(old.shape(), ownerParam.shape())) {
            throw new IllegalArgumentException("Cannot tie '" + alias + "' to '" + owner + "': shapes "
                    + java.util.Arrays.toString(old.shape()) + " and " + java.util.Arrays.toString(ownerParam.shape()));
        }
        aliasModule.parameters.put(leaf, ownerParam);
    }

    /**
     * Groups of parameter names that share one tensor, each group in {@code state_dict} order (the first name
     * owns the tensor); groups in the order of their first names. Only groups of two or more names.
     */
    public List<List<String>> tiedParameters() {
        Map<Parameter, List<String>> byParam = new IdentityHashMap<>();
        List<List<String>> groups = new ArrayList<>();
        for (Map.Entry<String, Module> m : namedModules().entrySet()) {
            for (Map.Entry<String, Parameter> p : m.getValue().parameters.entrySet()) {
                List<String> names = byParam.get(p.getValue());
                if (names == null) {
                    names = new ArrayList<>();
                    byParam.put(p.getValue(), names);
                    groups.add(names);
                }
                names.add(join(m.getKey(), p.getKey()));
            }
        }
        groups.removeIf(g -> g.size() < 2);
        return groups;
    }

    /** Bytes of all distinct parameters and buffers below this module, in their current dtypes. */
    public long byteSize() {
        long total = 0;
        for (Parameter p : namedParameters().values()) {
            total += p.byteSize();
        }
        for (Parameter b : namedBuffers().values()) {
            total += b.byteSize();
        }
        return total;
    }

    /** Number of elements of all distinct parameters. */
    public long parameterCount() {
        long total = 0;
        for (Parameter p : namedParameters().values()) {
            total += p.numel();
        }
        return total;
    }

    /** Releases every tensor below this module and puts every slot back on meta. */
    public void toMeta() {
        namedParameters().values().forEach(Parameter::toMeta);
        namedBuffers().values().forEach(Parameter::toMeta);
    }

    /**
     * Attaches a hook that runs around this module's forward pass (see {@link ForwardHook}).
     *
     * <pre>{@code
     * HookHandle h = model.module("transformer.encoder.layers.3").addForwardHook(alignDevicesHook);
     * }</pre>
     */
    public synchronized HookHandle addForwardHook(ForwardHook hook) {
        if (hook == null) {
            throw new IllegalArgumentException("hook must not be null");
        }
        List<ForwardHook> next = new ArrayList<>(forwardHooks);
        next.add(hook);
        forwardHooks = List.copyOf(next);
        return () -> removeForwardHook(hook);
    }

    /**
     * Attaches a hook that runs before every other hook of this module (and whose {@code afterForward} runs last):
     * for a guard that must be held while the other hooks bring weights in, such as {@link UseGuard#forwardHook()}.
     *
     * <pre>{@code
     * HookHandle h = model.addFirstForwardHook(model.useGuard().forwardHook());
     * }</pre>
     */
    public synchronized HookHandle addFirstForwardHook(ForwardHook hook) {
        if (hook == null) {
            throw new IllegalArgumentException("hook must not be null");
        }
        List<ForwardHook> next = new ArrayList<>(forwardHooks);
        next.add(0, hook);
        forwardHooks = List.copyOf(next);
        return () -> removeForwardHook(hook);
    }

    /**
     * The guard of this module's weights against being freed during a forward pass (see {@link UseGuard}): a
     * model's top-level forward enters it, and whoever releases the weights of a model other threads may be running
     * ({@code DispatchedModel.close()}, {@code ChatGLM.close()}) closes it first, which waits for those forwards.
     *
     * <pre>{@code
     * model.useGuard().close();   // no forward starts any more; the running ones have ended
     * model.toMeta();
     * }</pre>
     */
    public final UseGuard useGuard() {
        UseGuard g = useGuard;
        if (g == null) {
            synchronized (this) {
                g = useGuard;
                if (g == null) {
                    g = new UseGuard("Model " + className);
                    useGuard = g;
                }
            }
        }
        return g;
    }

    private synchronized void removeForwardHook(ForwardHook hook) {
        List<ForwardHook> next = new ArrayList<>(forwardHooks);
        for (int i = 0; i < next.size(); i++) {
            if (next.get(i) == hook) {
                next.remove(i);
                break;
            }
        }
        forwardHooks = List.copyOf(next);
    }

    /** The hooks attached to this module, in the order they run. */
    public List<ForwardHook> forwardHooks() {
        return forwardHooks;
    }

    /**
     * Where this module computes: the execution device a hook sets for it or, when a loader hooked the modules
     * below it instead, the first such device in pre-order; else the device of its first parameter or buffer that
     * holds values; else null (all on meta, or offloaded under a hook on an ancestor).
     *
     * <pre>{@code
     * Device d = model.module("transformer.encoder.layers.27").executionDevice();   // cpu, even if on disk
     * }</pre>
     */
    public Device executionDevice() {
        for (Module m : namedModules().values()) {
            for (ForwardHook h : m.forwardHooks) {
                Device d = h.executionDevice();
                if (d != null) {
                    return d;
                }
            }
        }
        for (Parameter p : namedParameters().values()) {
            if (p.isMaterialized()) {
                return p.device();
            }
        }
        for (Parameter b : namedBuffers().values()) {
            if (b.isMaterialized()) {
                return b.device();
            }
        }
        return null;
    }

    /**
     * Called by loaders (bigmodel-dispatch's {@code BigModel}, a model's own loading) once every weight has been
     * placed, so a model can compute what it derives from them (rotary tables, for example). Does nothing by
     * default.
     */
    public void onWeightsLoaded() {
    }

    /** Detaches every hook of this module and of all modules below it. */
    public void removeAllForwardHooks() {
        for (Module m : namedModules().values()) {
            synchronized (m) {
                m.forwardHooks = List.of();
            }
        }
    }

    /**
     * Starts a forward pass of this module: runs the hooks' {@code beforeForward} and returns the scope that maps
     * inputs and outputs. Subclasses call it at the top of their forward methods in a try-with-resources.
     */
    protected final ForwardScope enterForward() {
        List<ForwardHook> hooks = forwardHooks;
        return hooks.isEmpty() ? ForwardScope.NONE : ForwardScope.open(this, hooks);
    }

    static String join(String prefix, String name) {
        return prefix.isEmpty() ? name : prefix + "." + name;
    }

    @Override
    public String toString() {
        return className + "(" + children.size() + " children, " + parameters.size() + " parameters)";
    }
}
