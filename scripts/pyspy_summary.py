import sys,collections
for path in sys.argv[1:]:
    tot=0; thr=collections.Counter(); leaf=collections.Counter(); mid=collections.Counter()
    for line in open(path):
        stack,_,n=line.rstrip().rpartition(' ')
        try: n=int(n)
        except: continue
        frames=stack.split(';'); tot+=n
        thr[frames[0][:60]]+=n; leaf[frames[-1][:110]]+=n
        for f in set(frames[1:]): mid[f[:110]]+=n
    print("==", path, "total", tot)
    for k,v in thr.most_common(10): print(f"{v/tot:6.1%} THR {k}")
    for k,v in leaf.most_common(20): print(f"{v/tot:6.1%} LEAF {k}")
    for k,v in mid.most_common(25): print(f"{v/tot:6.1%} IN {k}")
